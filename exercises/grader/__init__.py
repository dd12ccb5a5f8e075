"""Sandboxed autograding of the course's nbgrader exercises (see exercises/README.md).

Modules: ``sandbox`` (bubblewrap command lines and limits), ``protocol`` (how the processes
talk), ``student`` (the student process: runs student code, untrusted), ``judge`` (the test
process: runs the tests, no student code), and the nbgrader plug-ins of the driver:
``rebuild`` (reads a submission, rebuilds it from the source notebook) and ``execute`` (runs
it in the two sandboxes); ``__main__`` (``python -m grader validate|check``).
"""
