"""Every error the API answers, with its HTTP status, system code and exact message.

`ApiError` carries one of these out of the domain; the shim and the worker turn it into a
ServiceStack `responseStatus` body. The texts are the contract (SPEC 3.1 and 4): word for word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorKind:
    http_status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of `responseStatus.errors`."""

    error_code: str
    field_name: str
    message: str
    meta: dict[str, str] = field(default_factory=dict)

    def as_wire(self) -> dict[str, Any]:
        return {
            "errorCode": self.error_code,
            "fieldName": self.field_name,
            "message": self.message,
            "meta": dict(self.meta),
        }


class ApiError(Exception):
    """A failure the caller is told about; raised by domain code, never returned, never
    swallowed. The transaction it leaves is rolled back, unless `keep_changes`: then what
    the failure itself wrote (a failed login counted, a wrong FYEO password counted) is
    committed before the caller answers (`worker.db.Database.write_session`)."""

    def __init__(
        self,
        kind: ErrorKind,
        *,
        errors: list[FieldError] | None = None,
        meta: dict[str, str] | None = None,
        message: str | None = None,
        keep_changes: bool = False,
    ) -> None:
        super().__init__(kind.code)
        self.kind = kind
        self.errors = errors or []
        self.meta = meta or {}
        self.message = message or kind.message
        self.keep_changes = keep_changes

    @property
    def http_status(self) -> int:
        return self.kind.http_status

    def response_body(self) -> dict[str, Any]:
        return {
            "responseStatus": {
                "errorCode": self.kind.code,
                "message": self.message,
                "errors": [e.as_wire() for e in self.errors],
                "meta": dict(self.meta),
            }
        }


# --- SendMessage rules (SPEC 3.1), in table order --------------------------------------
SESSION_INVALID = ErrorKind(401, "811", "The user session is no longer valid.")
MESSAGE_NOT_FOUND = ErrorKind(404, "929", "Message not found")
MESSAGE_RECALLED = ErrorKind(403, "915", "The message has been recalled.")
FORWARD_NOT_ALLOWED = ErrorKind(403, "909", "You cannot forward to this message.")
REPLY_NOT_ALLOWED = ErrorKind(403, "908", "You cannot reply to this message.")
REPLY_ALL_NOT_ALLOWED = ErrorKind(403, "77", "You cannot reply to this message.")
NO_FYEO_FEATURE = ErrorKind(403, "922", "This user doesn't have access to FYEO.")
NO_CONFIDENTIAL_FEATURE = ErrorKind(403, "930", "This user doesn't have access to Confidential.")
EXPIRY_DISABLED = ErrorKind(403, "75", "Message Expiry is disabled. You cannot set an expiry date.")
EXPIRY_INVALID = ErrorKind(403, "76", "Message Expiry is invalid.")
FYEO_PASSWORD_MISSING = ErrorKind(403, "51", "You must pass FYEO message password.")
FYEO_PASSWORD_WRONG = ErrorKind(403, "38", "Incorrect For Your Eyes Only password.")
RECIPIENTS_LIMIT = ErrorKind(403, "74", "Message recipients limit reached.")
RECIPIENT_DISABLED = ErrorKind(
    403,
    "8871",
    "You are trying to send a secure message to one or more Users that are disabled.",
)
CONTACTS_NOT_ALLOWED = ErrorKind(
    403, "49", "Your package does not allow you to send to members in your contact list."
)
BANNED_CONTENT = ErrorKind(
    403,
    "17",
    "This secure message cannot be sent because it contains the keywords or strings "
    "that are banned.",
)
INVITE_FAILED = ErrorKind(403, "30", "Error to invite new users to the Secure Messaging Platform")
CRA_REQUIRED_ONE = ErrorKind(403, "44", "CRA Input required to send this message to this user")
CRA_REQUIRED_MANY = ErrorKind(
    403, "45", "CRA Input required to send this message to multiple users"
)
DAILY_LIMIT_REACHED = ErrorKind(
    403,
    "28",
    "You have sent all of your allowed daily secure messages. Please contact the "
    "administrator to upgrade your User Group profile.",
)

# --- the operations around SendMessage (SPEC 4) -----------------------------------------
USER_NOT_FOUND = ErrorKind(404, "810", "User does not exist.")
INVALID_CREDENTIALS = ErrorKind(403, "803", "Invalid credentials.")
USER_DISABLED = ErrorKind(403, "918", "User is disabled.")
LOGIN_LOCKED = ErrorKind(403, "55", "Maximum failed login attempts reached.")
PARENT_NOT_FOUND = ErrorKind(403, "929", "Message not found")
NO_ACCESS = ErrorKind(403, "907", "You do not have access to this message.")
ALREADY_SENT = ErrorKind(403, "906", "Message already sent.")
NO_RECALL_FEATURE = ErrorKind(403, "921", "This user doesn't have access to Recall.")
JOB_NOT_FOUND = ErrorKind(404, "NotFound", "Job not found")
# A code of this project (the vendor's is not public): see docs/security.md.
FYEO_LOCKED = ErrorKind(
    403, "39", "Too many incorrect For Your Eyes Only passwords. Try again later."
)

# --- wire-level errors (SPEC 2) ---------------------------------------------------------
VALIDATION = ErrorKind(400, "ValidationException", "Validation failed")
SERIALIZATION = ErrorKind(400, "SerializationException", "Could not deserialize the request body")
NOT_FOUND = ErrorKind(404, "NotFound", "Handler for request not found")
METHOD_NOT_ALLOWED = ErrorKind(405, "MethodNotAllowed", "Method not allowed")
NOT_ACCEPTABLE = ErrorKind(406, "NotAcceptable", "The requested format is not supported")
TOO_LARGE = ErrorKind(413, "RequestEntityTooLarge", "The request body is too large")
INTERNAL_ERROR = ErrorKind(500, "InternalServerError", "An unexpected error occurred.")
SEND_FAILED = ErrorKind(
    503, "ServiceUnavailable", "The send could not be completed; nothing was sent. Try again."
)
DATABASE_UNAVAILABLE = ErrorKind(
    503, "ServiceUnavailable", "The database cannot be reached. Try again shortly."
)
BROKER_UNAVAILABLE = ErrorKind(
    503, "ServiceUnavailable", "The message broker cannot be reached. Try again shortly."
)


def validation_error(first: FieldError, *more: FieldError, message: str = "") -> ApiError:
    """A 400 ValidationException naming each offending field; its message is `message`,
    or else the first field's ("'Username' must not be empty")."""
    return ApiError(
        VALIDATION,
        errors=[first, *more],
        message=message or f"'{first.field_name}' {first.message}",
    )
