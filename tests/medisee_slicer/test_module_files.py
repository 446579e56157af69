"""What CI can check without Slicer: the module and its test parse, the CMake files name files that exist,
the .ui has every widget the code uses, and MediSeeLib stays free of Slicer imports."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "MediSeeSlicer"
SOURCE = (MODULE / "MediSee.py").read_text()
FORBIDDEN = {"slicer", "qt", "vtk", "ctk", "medisee", "monailabel_app", "monailabel", "SampleData"}


def cmake_calls(text: str, command: str) -> list[list[str]]:
    """The arguments of every ``command(...)`` call (comments dropped, no nested parentheses in our files)."""
    text = re.sub(r"(^|\s)#[^\n]*", r"\1", text)
    return [args.split() for args in re.findall(rf"\b{command}\s*\(([^)]*)\)", text, flags=re.IGNORECASE)]


def test_the_module_and_its_self_test_parse():
    tree = ast.parse(SOURCE)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"MediSee", "MediSeeWidget", "MediSeeLogic", "MediSeeTest"} <= set(classes)
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["MediSeeTest"] == ["ScriptedLoadableModuleTest"] and "ScriptedLoadableModuleWidget" in bases["MediSeeWidget"]
    methods = {f.name for f in classes["MediSeeTest"].body if isinstance(f, ast.FunctionDef)}
    assert {"setUp", "runTest"} <= methods and any(m.startswith("test_") for m in methods)


@pytest.mark.parametrize("path", [MODULE / "MediSee.py", *sorted((MODULE / "MediSeeLib").glob("*.py"))], ids=lambda p: p.name)
def test_the_code_parses_as_the_oldest_supported_slicers_python(path):
    """Slicer 5.2-5.6 ship Python 3.9."""
    ast.parse(path.read_text(), feature_version=(3, 9))


def test_every_name_the_module_takes_from_the_library_exists():
    import importlib

    for node in ast.parse(SOURCE).body:
        if isinstance(node, ast.ImportFrom) and node.module.startswith("MediSeeLib"):
            module = importlib.import_module(node.module)
            missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
            assert not missing, f"{node.module} has no {missing}"


def test_the_top_level_cmake_is_a_slicer_extension():
    text = (ROOT / "CMakeLists.txt").read_text()
    variables = {args[0] for args in cmake_calls(text, "set")}
    assert {"EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
            "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"} <= variables
    assert cmake_calls(text, "find_package") == [["Slicer", "REQUIRED"]]
    for line in ("include(${Slicer_USE_FILE})", "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text
    for (folder,) in cmake_calls(text, "add_subdirectory"):
        assert (ROOT / folder / "CMakeLists.txt").is_file()


def test_the_module_cmake_names_only_files_that_exist_and_every_library_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    variables = {args[0]: args[1:] for args in cmake_calls(text, "set")}
    name = variables["MODULE_NAME"][0]
    assert name == "MediSee"
    scripts = [s.replace("${MODULE_NAME}", name) for s in variables["MODULE_PYTHON_SCRIPTS"]]
    resources = [r.replace("${MODULE_NAME}", name) for r in variables["MODULE_PYTHON_RESOURCES"]]
    for path in scripts + resources:
        assert (MODULE / path).is_file(), path
    library = {str(p.relative_to(MODULE)) for p in (MODULE / "MediSeeLib").glob("*.py")}
    assert library <= set(scripts), f"not packaged: {sorted(library - set(scripts))}"
    build = cmake_calls(text, "slicerMacroBuildScriptedModule")[0]
    assert build[:2] == ["NAME", "${MODULE_NAME}"] and "${MODULE_PYTHON_SCRIPTS}" in build and "${MODULE_PYTHON_RESOURCES}" in build
    assert ["SCRIPT", "${MODULE_NAME}.py"] in cmake_calls(text, "slicer_add_python_unittest")


def test_the_ui_file_has_every_widget_the_module_uses():
    tree = ET.parse(MODULE / "Resources" / "UI" / "MediSee.ui")
    names = {w.get("name") for w in tree.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE))
    assert used <= names, f"missing in the .ui: {sorted(used - names)}"
    node_types = {w.get("name"): [s.text for s in w.iter("string")] for w in tree.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    assert "vtkMRMLScalarVolumeNode" in node_types["inputVolumeSelector"]
    assert "vtkMRMLMarkupsROINode" in node_types["boxSelector"] and "vtkMRMLMarkupsFiducialNode" in node_types["pointSelector"]


def test_the_icon_is_a_128_pixel_png():
    with Image.open(MODULE / "Resources" / "Icons" / "MediSee.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


@pytest.mark.parametrize("path", sorted((MODULE / "MediSeeLib").glob("*.py")), ids=lambda p: p.name)
def test_the_library_imports_nothing_from_slicer_or_the_server(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


FAKE_SLICER = r"""
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
"""
FAKE_USE_FILE = r"""
function(_declare path)
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${path})
    message(FATAL_ERROR "declared but missing: ${path}")
  endif()
  file(APPEND ${CMAKE_BINARY_DIR}/declared.txt "${CMAKE_CURRENT_SOURCE_DIR}/${path}\n")
endfunction()
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MODULE "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(path ${MODULE_SCRIPTS} ${MODULE_RESOURCES})
    _declare(${path})
  endforeach()
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(TEST "" "SCRIPT" "" ${ARGN})
  _declare(${TEST_SCRIPT})
endfunction()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_the_extension_configures_against_slicers_macros(tmp_path):
    """A stand-in Slicer whose macros fail on any declared file that does not exist."""
    slicer = tmp_path / "slicer"
    slicer.mkdir()
    (slicer / "SlicerConfig.cmake").write_text(FAKE_SLICER)
    (slicer / "UseSlicer.cmake").write_text(FAKE_USE_FILE)
    (slicer / "Empty.cmake").write_text("")
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={slicer}", "-DBUILD_TESTING=ON"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    declared = (build / "declared.txt").read_text().split()
    assert str(MODULE / "MediSee.py") in declared and str(MODULE / "Resources" / "UI" / "MediSee.ui") in declared
    assert declared.count(str(MODULE / "MediSee.py")) == 2  # a script, and the registered unittest
