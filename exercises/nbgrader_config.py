# nbgrader configuration of the course's exercises (read by every `nbgrader` command run in
# exercises/, and by `make release` / `make autograde` / `make grades`, which pass it explicitly).
#
# Autograding runs student code in a sandbox (exercises/grader): nbgrader's own `Execute`
# is replaced by `SandboxedExecute`, and every submission is first rebuilt from the source
# notebook (`RebuildFromSource`), so only the students' answer cells come from their files.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds, IgnorePattern, LimitOutput,
    OverwriteCells, OverwriteKernelspec, SaveAutoGrades)

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import GetGrades  # noqa: E402

from grader.execute import SandboxedExecute  # noqa: E402
from grader.rebuild import HideHiddenTests, RebuildFromSource  # noqa: E402

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

c.CourseDirectory.course_id = "cnn-viz"
c.CourseDirectory.root = os.environ.get("COURSE_EXERCISES_ROOT", HERE)
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".venv-grader"]
# generate_feedback copies every file beside a graded notebook into feedback/<student>/<exercise>/,
# which may be served to everyone from one origin: nothing but the feedback page goes there
# (`python -m grader scrub` already leaves only the notebook and timestamp.txt in each submission).
c.GenerateFeedbackApp.CourseDirectory.ignore = ["*", ".*"]

# Releases: no solutions, no hidden tests, no outputs (nbgrader's defaults), and no header.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograding: rebuild from the source, then nbgrader's own sanitizing, then the sandbox.
c.Autograde.exporter_class = "grader.rebuild.TolerantNotebookExporter"
c.Autograde.sanitize_preprocessors = [
    RebuildFromSource, ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata]
c.Autograde.autograde_preprocessors = [
    SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
    AssignLatePenalties, CheckCellMetadata]

# Limits per submitted notebook (override on the command line, e.g. --SandboxedExecute.timeout=300).
c.SandboxedExecute.python = os.environ.get(
    "COURSE_PYTHON", os.path.join(os.path.dirname(HERE), ".venv", "bin", "python"))  # the course's venv
c.SandboxedExecute.timeout = 120        # wall clock for the whole notebook, seconds
c.SandboxedExecute.cell_timeout = 30    # each of the student's cells
c.SandboxedExecute.call_timeout = 20    # each call of a student's function by a test
c.SandboxedExecute.memory_mb = 3072     # data memory per process

# Feedback (HTML per student): scores, every test's error message, the report of the grading
# run; the code of the hidden tests is left out, so they can be used again next year.
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
