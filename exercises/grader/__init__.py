"""Sandboxed autograding of the course's nbgrader exercises (see exercises/README.md).

Modules: ``sandbox`` (bubblewrap command lines and limits), ``protocol`` (how the processes
talk), ``student_runner`` (runs student code, untrusted), ``test_runner`` (runs the tests,
no student code), ``executor`` (the nbgrader plug-ins; the driver), ``__main__`` (``python
-m grader validate|check``).
"""
