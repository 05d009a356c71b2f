"""The staff console (issue 4): blueprint ``staff`` at ``/staff/``."""
