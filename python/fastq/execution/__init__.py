"""Running a task and sending what its message asks for next: shared by eager mode
(``Task.apply``) and the worker, so it sits below both."""
