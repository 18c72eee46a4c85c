"""Errors the workbench reports to people: one line that names the file or the cause.

The command line turns any ``WorkbenchError`` into that line on stderr and exit code 2,
without a traceback. Everything else is a bug and keeps its traceback.
"""


class WorkbenchError(Exception):
    """Base class of errors caused by input, not by the workbench."""


class DatasetError(WorkbenchError):
    """A dataset file (annotations or image) is missing, unreadable or inconsistent.

    The message always names the file and, where it applies, the image or annotation id.
    """

    def __init__(self, message: str, *, path=None, image_id=None, annotation_id=None):
        parts = []
        if path is not None:
            parts.append(str(path))
        if image_id is not None:
            parts.append(f"image id {image_id}")
        if annotation_id is not None:
            parts.append(f"annotation id {annotation_id}")
        prefix = ": ".join([", ".join(parts)]) if parts else ""
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.image_id = image_id
        self.annotation_id = annotation_id


class PredictionFileError(WorkbenchError):
    """A COCO results file is malformed or does not fit its ground truth."""


class RunInterrupted(WorkbenchError):
    """Training stopped on SIGINT / SIGTERM after saving its checkpoint; the caller stops too
    (rather than going on as if the run had finished), and the same call resumes it."""


class ConfigError(WorkbenchError):
    """A configuration value or command-line combination is invalid."""
