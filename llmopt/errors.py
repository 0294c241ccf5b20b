"""The one exception type for user mistakes: a ValueError whose message says how to fix it."""


class LlmoptError(ValueError):
    """A problem with user input (a source, a file, a setting) that the user can fix.

    The dashboard shows the message with ``st.error``; the CLI prints it and exits 2.
    """
