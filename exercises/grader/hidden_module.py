"""Stands in for a module that an exercise asks the student to write themselves.

While a submission is graded, the sandbox puts this file where the course's reference
implementation (or a library doing the same job) would be, so a solution that just calls
the reference fails instead of scoring.
"""
raise ImportError(
    f"{__name__} is not available while this exercise is graded: the exercise asks you to write "
    f"this method yourself (you may use torch, numpy and the course_lib helpers the notebook imports)")
