"""ServiceStack's metadata pages and "Add ServiceStack Reference" DTOs: see `model`."""

from api_shim.metadata.model import register_metadata

__all__ = ["register_metadata"]
