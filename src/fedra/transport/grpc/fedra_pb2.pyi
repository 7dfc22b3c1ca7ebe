from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullRequest(_message.Message):
    __slots__ = ("client_id", "wait_ms")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    wait_ms: int
    def __init__(self, client_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("task_id", "nonce", "kind", "round", "payload_size")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    nonce: str
    kind: str
    round: int
    payload_size: int
    def __init__(self, task_id: _Optional[str] = ..., nonce: _Optional[str] = ..., kind: _Optional[str] = ..., round: _Optional[int] = ..., payload_size: _Optional[int] = ...) -> None: ...

class ReplyHeader(_message.Message):
    __slots__ = ("task_id", "client_id", "nonce", "payload_size", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    client_id: str
    nonce: str
    payload_size: int
    error: str
    def __init__(self, task_id: _Optional[str] = ..., client_id: _Optional[str] = ..., nonce: _Optional[str] = ..., payload_size: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("task", "reply", "offset", "data", "crc32")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    task: TaskHeader
    reply: ReplyHeader
    offset: int
    data: bytes
    crc32: int
    def __init__(self, task: _Optional[_Union[TaskHeader, _Mapping]] = ..., reply: _Optional[_Union[ReplyHeader, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("received", "reason")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    received: bool
    reason: str
    def __init__(self, received: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
