"""An upload handler that spools large files under a name of its own, not the client's."""

from __future__ import annotations

from django.core.files.uploadhandler import TemporaryFileUploadHandler

# The longest original name kept (as metadata only); the stored name is always generated.
MAX_NAME_CHARS = 255
MAX_EXTENSION_CHARS = 16


class SafeTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, field_name, file_name, *args, **kwargs):
        # Django names the temporary file ".upload" + the client's extension: bound it.
        base, dot, extension = file_name[-MAX_NAME_CHARS:].rpartition(".")
        if dot and len(extension) > MAX_EXTENSION_CHARS:
            file_name = f"{base}.{extension[:MAX_EXTENSION_CHARS]}"
        super().new_file(field_name, file_name[-MAX_NAME_CHARS:], *args, **kwargs)
