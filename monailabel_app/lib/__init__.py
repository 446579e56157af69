"""The app's parts: settings, the served model, the datastore, infer/train/strategy tasks."""
