"""The error tree of geogate; every error reaches a client as one JSON shape.

    GeogateError                    (status, code)   -> {"error": {"code", "message", "request_id"}}
    ├── InvalidJSON                 400 invalid_json        body is not JSON / not UTF-8
    ├── InvalidHeader               400 invalid_header      e.g. a malformed X-Deadline-Ms
    ├── MalformedHTTP               400 malformed_http      the request breaks HTTP/1.1 itself
    ├── InvalidRequest              422 invalid_request     JSON of the wrong shape or values
    │   ├── BatchTooLarge           422 batch_too_large     more items than max_batch
    │   └── InputTooLong            422 input_too_long      an address over max_chars
    ├── NotFound                    404 not_found
    ├── MethodNotAllowed            405 method_not_allowed
    ├── Conflict                    409 conflict            a registry write lost its compare-and-set
    ├── PayloadTooLarge             413 payload_too_large   body over the size limit
    ├── ExpectationFailed           417 expectation_failed  an Expect other than 100-continue
    ├── Overloaded                  429 overloaded          queue full; carries Retry-After
    ├── Unavailable                 503 unavailable         not ready, draining, task not served
    │   └── StoreUnavailable        503 store_unavailable   Redis (registry or cache) unreachable
    ├── DeadlineExceeded            504 deadline_exceeded   the caller's deadline passed
    └── ModelError                  500 model_error         the model itself failed (never input)

Foreign errors (msgspec, aiohttp) are translated where they are raised, with
``raise ... from exc``; one middleware per service turns the tree into responses.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "BatchTooLarge",
    "Conflict",
    "DeadlineExceeded",
    "ErrorBody",
    "ErrorDetail",
    "ExpectationFailed",
    "Forbidden",
    "GeogateError",
    "InputTooLong",
    "InvalidHeader",
    "InvalidJSON",
    "InvalidRequest",
    "MalformedHTTP",
    "MethodNotAllowed",
    "ModelError",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "PrecheckFailed",
    "StoreUnavailable",
    "Unauthorized",
    "Unavailable",
    "error_body",
]


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    request_id: str


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class GeogateError(Exception):
    # Class attributes give each subclass its status and code; an instance may override
    # them when it stands for a foreign error (an aiohttp HTTPException, say).
    status: int = 500
    code: str = "internal"
    body: bytes | None = None  # a ready JSON error body to pass on as is (a node's own 4xx)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class InvalidJSON(GeogateError):
    status = 400
    code = "invalid_json"


class InvalidHeader(GeogateError):
    status = 400
    code = "invalid_header"


class MalformedHTTP(GeogateError):
    """aiohttp's parser refused the request (a control character in a header, a header
    line or section over its limits, an unknown method); the status is the parser's."""

    status = 400
    code = "malformed_http"


class InvalidRequest(GeogateError):
    status = 422
    code = "invalid_request"


class BatchTooLarge(InvalidRequest):
    code = "batch_too_large"


class InputTooLong(InvalidRequest):
    code = "input_too_long"


class Unauthorized(GeogateError):
    """No credentials, or ones that match nothing (the message never echoes them)."""

    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="geogate"'}


class Forbidden(GeogateError):
    """Known credentials whose role does not allow this."""

    status = 403
    code = "forbidden"


class PrecheckFailed(GeogateError):
    """A checked change (a switch) whose pre-checks failed: the error body also carries
    the pre-check report, so the operator sees what to fix."""

    status = 422
    code = "precheck_failed"


class NotFound(GeogateError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GeogateError):
    status = 405
    code = "method_not_allowed"


class Conflict(GeogateError):
    status = 409
    code = "conflict"

    def __init__(self, message: str, current: int | None = None) -> None:
        super().__init__(message)
        self.current = current  # the epoch the store holds now, when known


class PayloadTooLarge(GeogateError):
    status = 413
    code = "payload_too_large"


class ExpectationFailed(GeogateError):
    status = 417
    code = "expectation_failed"


class Overloaded(GeogateError):
    status = 429
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(GeogateError):
    status = 503
    code = "unavailable"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


class StoreUnavailable(Unavailable):
    code = "store_unavailable"

    def __init__(self, message: str, retry_after_s: int | None = 1) -> None:
        super().__init__(message, retry_after_s)


class DeadlineExceeded(GeogateError):
    status = 504
    code = "deadline_exceeded"


class ModelError(GeogateError):
    status = 500
    code = "model_error"


_encoder = msgspec.json.Encoder()


def error_body(code: str, message: str, request_id: str) -> bytes:
    return _encoder.encode(ErrorBody(ErrorDetail(code=code, message=message, request_id=request_id)))
