"""Helpers shared by the tests (a MONAI Label server, an Orthanc PACS, small studies); no tests here."""
