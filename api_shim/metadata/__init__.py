"""ServiceStack's metadata pages and "Add ServiceStack Reference" DTOs (issue 14, point 9).

A ServiceStack user finds an API at `/metadata`, reads an operation at
`/json/metadata?op=<Name>` and types it with the DTOs at `/types/typescript` or
`/types/csharp`. All four come from the one operation registry that /openapi.json comes
from: `model.describe` walks the `Operation` objects and the JSON schemas of their request
and response models once, into a small neutral description (`Api`), and three renderers,
a module each (`pages` for HTML, `typescript`, `csharp`), render that description;
`endpoints` serves them. No operation or field is listed twice.
"""

from api_shim.metadata.endpoints import register_metadata

__all__ = ["register_metadata"]
