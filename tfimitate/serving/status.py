"""Refused requests: the gRPC status TF Serving answers, and the HTTP code its REST API maps it to.

Example:
    error = RequestError(grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(m)")
    http_status(error.code)  # 404
"""



class RequestError(Exception):
    """A request the server refuses, with the grpc.StatusCode TF Serving would answer."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode.
_HTTP = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
         "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
         "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
         "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
         "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}


def http_status(code):
    """The HTTP status TF Serving's REST API answers for a grpc.StatusCode."""
    return _HTTP.get(code.name, 500)
