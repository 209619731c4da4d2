"""Whole conversations, recorded and replayed.

Theory of operation.

Recording (`recorder`).  `ConversationRecorder.from_fixtures` builds a `Gateway` whose
transport is a `RecordingTransport` and whose identity provider is wrapped so the caller
it vouches for is remembered; the cassette starts with the fixtures themselves.  Its
`handle` is `Gateway.handle` plus a `capture()` scope: when the answer is whole, one
`Conversation` (client request, gateway response, the backend exchanges the request
caused) is appended at once; when it is a stream, the relay is wrapped and the
conversation is written when the relay closes, with every event the client received,
its time, and `cancelled` if the client left before the end.  The client's token is
never written, only its scheme (`Bearer <redacted>`) and the caller it identified, which
is why replay needs no tokens file.

Replay (`runner`).  `replay_cassette` runs each recorded client request (`cases`) through
a real `Gateway` whose transport answers from that request's own records (a
`SwitchingTransport` over one `ReplayTransport` per case) and whose identity provider
answers with the recorded caller (`RecordedCallerIdentity`), then compares what the
gateway answers with what was recorded (`comparison`):

* our JSON Lines conversations: the gateway comes from the cassette's `fixtures` record
  (or a fixtures folder passed in); each conversation is replayed against its own
  backend exchanges and its caller; status, headers and body (for a stream, the list
  of events) must be byte-identical.
* go-vcr cassettes (and bare exchanges in ours): each recorded backend exchange becomes
  a client request to the plain `/v1/...` route, sent to a synthetic catalog, built in
  memory, of one `DirectAPIEndpoint` per model whose `api_url` is the recorded URL; the
  gateway must hand the client what the backend answered: status, content type and body
  bytes.  Backend headers a client reads (`x-request-id`, rate limits, ...) that the
  gateway drops, and a backend request body that went out re-serialised, are reported
  as notes, not as differences.

A `ReplayMismatch` inside the gateway surfaces to the client as a 502 (the driver turns
every adaptor exception into one); the runner reads the transport's `mismatches` and
reports "the gateway sent a backend request no record answers" instead of a bare 502.

All of it is anyio only: the `replay` command (`command`) runs under asyncio or trio.
"""

from frontends.replay.command import add_replay_command, run_replay_command
from frontends.replay.recorded_caller import RecordedCallerIdentity
from frontends.replay.recorder import ConversationRecorder, RecordingIdentity
from frontends.replay.runner import Replayed, replay_cassette

__all__ = [
    "ConversationRecorder",
    "RecordedCallerIdentity",
    "RecordingIdentity",
    "Replayed",
    "add_replay_command",
    "replay_cassette",
    "run_replay_command",
]
