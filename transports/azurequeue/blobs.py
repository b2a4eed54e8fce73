"""Store message bodies too large for a queue message in Azure Blob Storage."""

from __future__ import annotations

import contextlib
import uuid

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient


class LargeBodyStore:
    """Uploads, downloads and deletes out-of-line message bodies in one blob container."""

    def __init__(self, service: BlobServiceClient | None, container: str) -> None:
        self._service = service
        self._container = container
        self._container_ready = False

    def _require(self) -> BlobServiceClient:
        """Return the blob client, or explain how to configure one."""
        if self._service is None:
            raise ValueError(
                "A message exceeds the queue size limit and no blob endpoint is configured: "
                "set the `blob_account_url` transport option or use a connection string"
            )
        return self._service

    def put(self, queue: str, text: str) -> str:
        """Store `text` and return the reference (`container/name`) to carry in the queue."""
        service = self._require()
        if not self._container_ready:
            with contextlib.suppress(ResourceExistsError):
                service.create_container(self._container)
            self._container_ready = True
        name = f"{queue}/{uuid.uuid4().hex}"
        service.get_blob_client(self._container, name).upload_blob(
            text.encode("utf-8"), overwrite=True
        )
        return f"{self._container}/{name}"

    def get(self, reference: str) -> str:
        """Return the text stored under `reference`."""
        container, name = reference.split("/", 1)
        blob = self._require().get_blob_client(container, name)
        return bytes(blob.download_blob().readall()).decode("utf-8")

    def delete(self, reference: str) -> None:
        """Delete the body stored under `reference`; a body already gone is fine."""
        container, name = reference.split("/", 1)
        with contextlib.suppress(ResourceNotFoundError):
            self._require().get_blob_client(container, name).delete_blob()
