"""A short end-to-end flow of a Python client against a fresh parley, with stubs from scripts/gen-python.sh.

Usage: flow.py <generated stubs dir> <host:port> <admin token> [step ...]

Steps, run in the order given (default: all of STEPS, in order); each is one function below, taking the
shared Flow and returning the facts it prints:
  admin_setup          AdminService with the admin token: account, user profile, LLM client, API key
  error_details        a call with the API key that fails; its grpc-status-details-bin decoded into
                       google.rpc.Status, then ErrorInfo and BadRequest unpacked from its Any details
  prompt_with_logs     PromptService: open a prompt, append history, record a tool call and a plugin usage,
                       read them back (GetPromptHistory)
  prompt_import        PromptService.ImportPrompt as a client stream (header, history, tool call, trailer), read
                       back; the same session key again is ALREADY_EXISTS
  genie_session_watch  GenieService: register a model type, create a session, watch it while two events
                       move it through its states
  genie_delta_resume   GenieService: stream an utterance, drop the watch mid-utterance, resume it with the
                       last revision and delta position seen (after_deltas), and get the rest, then the commit
  end_user_erasure     end users: sessions and a prompt created for two end users, a list filtered by one
                       page by page, an open with another end user refused, EraseEndUser of one (needs the
                       model type of genie_session_watch), what then reads back
  genie_token_budget   GenieService: a model type counting in cl100k_base, each element's token_count and the
                       session's running total, FormatDialogue within a token_budget, a negative budget refused
  chat_messages        PromptService: chat messages in proto3 JSON (the list in $PARLEY_CHAT_MESSAGES, else a
                       few), parsed with json_format, appended, and printed back as json_format prints them
                       from ListHistory and GetPromptHistory (the test compares the bytes)
  session_transfer     GenieService: ExportSession of every revision, ImportSession of its records as a new
                       session, each revision and the secondary value read back the same

Each step prints one JSON line {"step": name, ...facts}. A failed check raises, so the script exits non-zero
with the traceback (and the JSON lines of the steps before it) for the test to show.
"""
import json
import os
import queue
import sys
import uuid

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from google.protobuf import field_mask_pb2, json_format, struct_pb2, timestamp_pb2  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from parley.admin.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from parley.enduser.v1 import enduser_pb2, enduser_pb2_grpc  # noqa: E402
from parley.genie.v1 import genie_pb2, genie_pb2_grpc  # noqa: E402
from parley.prompt.v1 import prompt_pb2, prompt_pb2_grpc  # noqa: E402

TIMEOUT = 30  # seconds, per call


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def struct(d):
    s = struct_pb2.Struct()
    s.update(d)
    return s


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


class Flow:
    """The channel, the stubs and what earlier steps created."""

    def __init__(self, address, admin_token):
        self.channel = grpc.insecure_channel(address)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.prompt = prompt_pb2_grpc.PromptServiceStub(self.channel)
        self.genie = genie_pb2_grpc.GenieServiceStub(self.channel)
        self.end_users = enduser_pb2_grpc.EndUserServiceStub(self.channel)
        self.admin_md = bearer(admin_token)
        self.md = None  # the API key's, once admin_setup ran
        self.ids = {}


def status_details(err):
    """google.rpc.Status from the grpc-status-details-bin trailer of a failed call, as any gRPC client decodes it."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    check(raw is not None, f"{err.code().name} carries no grpc-status-details-bin")
    st = status_pb2.Status.FromString(raw)
    check(st.code == err.code().value[0], f"Status.code {st.code} is not the call's {err.code()}")
    check(st.message == err.details(), f"Status.message {st.message!r} is not the call's {err.details()!r}")
    return st


def unpack(st, cls):
    """Every detail of type `cls` in a google.rpc.Status."""
    out = []
    for any_ in st.details:
        if any_.Is(cls.DESCRIPTOR):
            msg = cls()
            any_.Unpack(msg)
            out.append(msg)
    return out


def admin_setup(f):
    account = f.admin.CreateAccount(admin_pb2.CreateAccountRequest(display_name="Python client"), metadata=f.admin_md, timeout=TIMEOUT).account
    profile = f.admin.CreateUserProfile(
        admin_pb2.CreateUserProfileRequest(account_id=account.id, username="guido", email="guido@example.com"),
        metadata=f.admin_md,
        timeout=TIMEOUT,
    ).user_profile
    llm_client = f.admin.CreateLlmClient(
        admin_pb2.CreateLlmClientRequest(account_id=account.id, name="hr", description="from Python"), metadata=f.admin_md, timeout=TIMEOUT
    ).llm_client
    key = f.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(user_profile_id=profile.id, description="python flow"), metadata=f.admin_md, timeout=TIMEOUT)
    check(key.secret != "", "CreateApiKey returned no secret")
    check(key.api_key.user_profile_id == profile.id, "the API key belongs to another profile")
    f.md = bearer(key.secret)
    f.ids.update(account=account.id, user_profile=profile.id, llm_client=llm_client.id, api_key=key.api_key.id)
    return {"account_id": account.id, "account_number": account.account_number, "llm_client": llm_client.name, "api_key_id": key.api_key.id}


def error_details(f):
    bad = prompt_pb2.OpenPromptRequest(llm_client_id=f.ids["llm_client"], ip_address="not-an-ip", url="ftp://example.com/", request_id="not-a-uuid")
    try:
        f.prompt.OpenPrompt(bad, metadata=f.md, timeout=TIMEOUT)
    except grpc.RpcError as err:
        st = status_details(err)
        infos = unpack(st, error_details_pb2.ErrorInfo)
        requests = unpack(st, error_details_pb2.BadRequest)
        check(len(infos) == 1, f"expected one ErrorInfo, got {len(infos)}")
        check(len(requests) == 1, f"expected one BadRequest, got {len(requests)}")
        info = infos[0]
        return {
            "code": err.code().name,
            "message": err.details(),
            "reason": info.reason,
            "domain": info.domain,
            "metadata": dict(info.metadata),
            "violations": [{"field": v.field, "description": v.description} for v in requests[0].field_violations],
            "detail_types": [a.type_url for a in st.details],
        }
    raise AssertionError("OpenPrompt with an invalid ip_address, url and request_id succeeded")


def prompt_with_logs(f):
    plugin = f.admin.CreatePlugin(
        admin_pb2.CreatePluginRequest(account_id=f.ids["account"], name="weather", description="Current weather"), metadata=f.admin_md, timeout=TIMEOUT
    ).plugin
    opened = f.prompt.OpenPrompt(
        prompt_pb2.OpenPromptRequest(llm_client_id=f.ids["llm_client"], ip_address="203.0.113.7", user_agent="flow.py", url="https://chat.example.com/c"),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    check(opened.created, "OpenPrompt without a session key did not create a prompt")
    prompt_id = opened.prompt.id
    messages = [
        prompt_pb2.ChatMessage(role=prompt_pb2.CHAT_ROLE_USER, content="Weather in Oslo?"),
        prompt_pb2.ChatMessage(
            role=prompt_pb2.CHAT_ROLE_ASSISTANT,
            tool_calls=[prompt_pb2.ChatToolCall(id="call_1", function_name="get_weather", function_arguments='{"city":"Oslo"}', call_type="function")],
        ),
        prompt_pb2.ChatMessage(role=prompt_pb2.CHAT_ROLE_TOOL, tool_call_id="call_1", content='{"temp_c":3}'),
    ]
    f.prompt.AppendHistory(
        prompt_pb2.AppendHistoryRequest(prompt_id=prompt_id, request=struct({"model": "gpt-4o"}), messages=messages, request_id=str(uuid.uuid4())),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    f.prompt.RecordToolCall(
        prompt_pb2.RecordToolCallRequest(
            prompt_id=prompt_id, plugin_id=plugin.id, function_name="get_weather", function_args='{"city":"Oslo"}', response=struct({"temp_c": 3})
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    f.prompt.RecordPluginUsage(
        prompt_pb2.RecordPluginUsageRequest(prompt_id=prompt_id, plugin_id=plugin.id, input_text="Weather in Oslo?"), metadata=f.md, timeout=TIMEOUT
    )
    read = f.prompt.GetPromptHistory(prompt_pb2.GetPromptHistoryRequest(id=prompt_id), metadata=f.md, timeout=TIMEOUT)
    check(read.prompt.id == prompt_id, "GetPromptHistory returned another prompt")
    f.ids["prompt"] = prompt_id
    return {
        "prompt_id": prompt_id,
        "roles": [prompt_pb2.ChatRole.Name(m.role) for m in read.prompt_history],
        "tool_calls": [t.function_name for t in read.tool_calls],
        "plugin_usage": [u.input_text for u in read.plugin_usage],
        "revision": read.revision,
    }


def genie_session_watch(f):
    f.genie.RegisterModelType(
        genie_pb2.RegisterModelTypeRequest(
            model_type=genie_pb2.ModelType(
                name="qa",
                schema_version=1,
                json_schema=struct({"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}),
                state_machine=genie_pb2.StateMachine(
                    states=["awaiting_question", "awaiting_answer"],
                    initial_state="awaiting_question",
                    transitions=[
                        genie_pb2.Transition(from_state="awaiting_question", event_name="user_input", to_state="awaiting_answer", actor=genie_pb2.ACTOR_USER),
                        genie_pb2.Transition(from_state="awaiting_answer", event_name="ai_response", to_state="awaiting_question", actor=genie_pb2.ACTOR_ASSISTANT),
                    ],
                ),
            )
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    session = f.genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="qa", fields=struct({"topic": "tax"})), metadata=f.md, timeout=TIMEOUT).session
    check(session.revision == 1, f"a new session is at revision {session.revision}")
    sid = session.session_id

    # The watch replays from the start (revision 1), then goes live; its deadline bounds the whole step.
    watch = f.genie.WatchSession(genie_pb2.WatchSessionRequest(session_id=sid), metadata=f.md, timeout=TIMEOUT)
    updates = iter(watch)
    seen = []  # (revision, [event kinds]) of each commit, in order

    def next_update():
        for response in updates:
            u = response.update
            kind = u.WhichOneof("update")
            if kind == "commit":
                return u.revision, [e.WhichOneof("change") for e in u.commit.events]
            if kind == "caught_up":
                return u.revision, ["caught_up"]
            # deltas and aborts are not revisions
        raise AssertionError(f"the watch ended after {seen}")

    try:
        seen.append(next_update())  # replayed: the creation
        seen.append(next_update())  # the end of the replay: from here on, live
        check(seen[-1] == (1, ["caught_up"]), f"expected caught_up at revision 1 after the replay, got {seen[-1]}")
        f.genie.SendEvent(
            genie_pb2.SendEventRequest(session_id=sid, event_name="user_input", actor_input="What is VAT?", expected_revision=1, request_id=str(uuid.uuid4())),
            metadata=f.md,
            timeout=TIMEOUT,
        )
        f.genie.SendEvent(genie_pb2.SendEventRequest(session_id=sid, event_name="ai_response", actor_input="A tax on consumption."), metadata=f.md, timeout=TIMEOUT)
        while seen[-1][0] < 3:
            seen.append(next_update())
    finally:
        watch.cancel()
    check([r for r, _ in seen] == [1, 1, 2, 3], f"the watch saw revisions {[r for r, _ in seen]}, not 1, caught_up, 2, 3 in order")

    # A stale expected_revision: ABORTED, and the ErrorInfo says where the session is.
    try:
        f.genie.SendEvent(genie_pb2.SendEventRequest(session_id=sid, event_name="user_input", actor_input="late", expected_revision=1), metadata=f.md, timeout=TIMEOUT)
        raise AssertionError("a SendEvent with a stale expected_revision succeeded")
    except grpc.RpcError as err:
        info = unpack(status_details(err), error_details_pb2.ErrorInfo)[0]
        conflict = {"code": err.code().name, "reason": info.reason, "current_revision": info.metadata["current_revision"]}
    final = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=sid), metadata=f.md, timeout=TIMEOUT).session
    # Only the newest element, as a gateway reading recent context asks; the reply counts what it left out.
    recent = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=sid, dialogue_page_size=1), metadata=f.md, timeout=TIMEOUT)
    return {
        "recent": [d.actor_text for d in recent.session.dialogue],
        "recent_omitted": recent.omitted_dialogue_count,
        "session_id": sid,
        "state": final.state,
        "revision": final.revision,
        "dialogue": [d.actor_text for d in final.dialogue],
        "watched": [{"revision": r, "events": kinds} for r, kinds in seen],
        "conflict": conflict,
    }


def genie_delta_resume(f):
    f.genie.RegisterModelType(
        genie_pb2.RegisterModelTypeRequest(
            model_type=genie_pb2.ModelType(
                name="relay",
                schema_version=1,
                state_machine=genie_pb2.StateMachine(
                    states=["open"],
                    initial_state="open",
                    transitions=[genie_pb2.Transition(from_state="open", event_name="says", to_state="open", actor=genie_pb2.ACTOR_ASSISTANT)],
                ),
            )
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    sid = f.genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="relay"), metadata=f.md, timeout=TIMEOUT).session.session_id
    uid = "py-" + str(uuid.uuid4())

    # The worker: a client stream fed from a queue, so the step decides when each chunk goes out.
    chunks = queue.Queue()

    def requests():
        while (item := chunks.get()) is not None:
            yield item

    worker = f.genie.StreamUtterance.future(requests(), metadata=f.md, timeout=TIMEOUT)
    chunks.put(genie_pb2.StreamUtteranceRequest(session_id=sid, actor=genie_pb2.ACTOR_ASSISTANT, utterance_id=uid, text="c0 "))
    for i in (1, 2):
        chunks.put(genie_pb2.StreamUtteranceRequest(text=f"c{i} "))

    def deltas_until(watch, stop):
        """(chunk indexes of uid's deltas, the commit's DialogueAppended or None), reading until stop(kind, seen)."""
        seen, commit = [], None
        for response in watch:
            u = response.update
            kind = u.WhichOneof("update")
            if kind == "delta" and u.delta.utterance_id == uid:
                seen.append(u.delta.chunk_index)
            if kind == "commit":
                commit = next((e.dialogue_appended for e in u.commit.events if e.WhichOneof("change") == "dialogue_appended"), None)
            if stop(kind, seen):
                return seen, commit
        raise AssertionError(f"the watch ended after deltas {seen}")

    # A gateway's watch, dropped after three deltas.
    first = f.genie.WatchSession(genie_pb2.WatchSessionRequest(session_id=sid, after_revision=1), metadata=f.md, timeout=TIMEOUT)
    try:
        seen_first, _ = deltas_until(first, lambda kind, seen: len(seen) == 3)
    finally:
        first.cancel()
    for i in (3, 4):
        chunks.put(genie_pb2.StreamUtteranceRequest(text=f"c{i} "))

    # It reconnects with the last revision and the last delta it saw; the rest comes, then the commit.
    position = genie_pb2.DeltaPosition(utterance_id=uid, chunk_index=seen_first[-1])
    resumed = f.genie.WatchSession(genie_pb2.WatchSessionRequest(session_id=sid, after_revision=1, after_deltas=[position]), metadata=f.md, timeout=TIMEOUT)
    try:
        before, _ = deltas_until(resumed, lambda kind, seen: kind == "caught_up")
        chunks.put(genie_pb2.StreamUtteranceRequest(text="c5 ", last_chunk=True))
        chunks.put(None)
        after, commit = deltas_until(resumed, lambda kind, seen: kind == "commit")
    finally:
        resumed.cancel()
    committed = worker.result()
    check(commit is not None and commit.utterance_id == uid, f"the commit names utterance {commit and commit.utterance_id!r}, not {uid!r}")

    # The next prompt: a watch that starts from the dialogue rendered within a token budget.
    snapshot_request = genie_pb2.DialogueSnapshotRequest(format=genie_pb2.DIALOGUE_FORMAT_CHAT, token_budget=50)
    snap = f.genie.WatchSession(genie_pb2.WatchSessionRequest(session_id=sid, snapshot=snapshot_request), metadata=f.md, timeout=TIMEOUT)
    try:
        first_update = next(iter(snap)).update
    finally:
        snap.cancel()
    check(first_update.WhichOneof("update") == "snapshot", f"the first update is {first_update.WhichOneof('update')}, not a snapshot")
    return {
        "snapshot": {"revision": first_update.revision, "text": first_update.snapshot.text, "token_count": first_update.snapshot.token_count},
        "first": seen_first,
        "resumed": before + after,
        "revision": committed.revision,
        "commit_utterance_id_matches": commit.utterance_id == uid,
        "text": commit.element.actor_text,
    }


def failure(call):
    """The code, ErrorInfo reason and BadRequest fields of a call that must fail."""
    try:
        call()
    except grpc.RpcError as err:
        st = status_details(err)
        bad = unpack(st, error_details_pb2.BadRequest)
        return {
            "code": err.code().name,
            "reason": unpack(st, error_details_pb2.ErrorInfo)[0].reason,
            "fields": [v.field for b in bad for v in b.field_violations],
        }
    raise AssertionError("the call succeeded")


def end_user_erasure(f):
    def create(end_user, topic):
        req = genie_pb2.CreateSessionRequest(model_type="qa", fields=struct({"topic": topic}), end_user_id=end_user)
        return f.genie.CreateSession(req, metadata=f.md, timeout=TIMEOUT).session

    mine = [create("py-user-1", "tax"), create("py-user-1", "vat")]
    other = create("py-user-2", "keep")
    f.genie.SendEvent(genie_pb2.SendEventRequest(session_id=mine[0].session_id, event_name="user_input", actor_input="secret"), metadata=f.md, timeout=TIMEOUT)
    prompt = f.prompt.OpenPrompt(prompt_pb2.OpenPromptRequest(llm_client_id=f.ids["llm_client"], end_user_id="py-user-1"), metadata=f.md, timeout=TIMEOUT).prompt
    f.prompt.AppendHistory(
        prompt_pb2.AppendHistoryRequest(prompt_id=prompt.id, messages=[prompt_pb2.ChatMessage(role=prompt_pb2.CHAT_ROLE_USER, content="secret")]),
        metadata=f.md,
        timeout=TIMEOUT,
    )

    listed, token = [], ""
    while True:
        page = f.genie.ListSessions(genie_pb2.ListSessionsRequest(end_user_id="py-user-1", page_size=1, page_token=token), metadata=f.md, timeout=TIMEOUT)
        listed += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    check(listed == [s.session_id for s in mine], f"ListSessions by end user listed {listed}")

    mismatch = failure(
        lambda: f.prompt.OpenPrompt(prompt_pb2.OpenPromptRequest(session_key=prompt.session_key, end_user_id="py-user-2"), metadata=f.md, timeout=TIMEOUT)
    )
    invalid = failure(lambda: f.end_users.EraseEndUser(enduser_pb2.EraseEndUserRequest(end_user_id=" py-user-1"), metadata=f.md, timeout=TIMEOUT))
    erased = f.end_users.EraseEndUser(enduser_pb2.EraseEndUserRequest(end_user_id="py-user-1"), metadata=f.md, timeout=TIMEOUT)
    gone = failure(lambda: f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=mine[0].session_id), metadata=f.md, timeout=TIMEOUT))
    prompt_gone = failure(lambda: f.prompt.GetPrompt(prompt_pb2.GetPromptRequest(id=prompt.id), metadata=f.md, timeout=TIMEOUT))
    left = f.genie.ListSessions(genie_pb2.ListSessionsRequest(end_user_id="py-user-1"), metadata=f.md, timeout=TIMEOUT)
    kept = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=other.session_id), metadata=f.md, timeout=TIMEOUT).session
    again = f.end_users.EraseEndUser(enduser_pb2.EraseEndUserRequest(end_user_id="py-user-1"), metadata=f.md, timeout=TIMEOUT)
    return {
        "end_user_ids": [s.end_user_id for s in mine] + [prompt.end_user_id],
        "listed": len(listed),
        "mismatch": mismatch,
        "invalid": invalid,
        "erased": {
            "sessions": erased.sessions,
            "dialogue_elements": erased.dialogue_elements,
            "session_revisions": erased.session_revisions,
            "prompts": erased.prompts,
            "history_entries": erased.history_entries,
        },
        "session_after": gone,
        "prompt_after": prompt_gone,
        "listed_after": len(left.sessions),
        "kept": kept.end_user_id,
        "repeat_sessions": again.sessions + again.prompts,
    }


def genie_token_budget(f):
    f.genie.RegisterModelType(
        genie_pb2.RegisterModelTypeRequest(
            model_type=genie_pb2.ModelType(
                name="gpt4chat",
                schema_version=1,
                state_machine=genie_pb2.StateMachine(states=["open"], initial_state="open"),
                tokenizer_encoding="cl100k_base",
            )
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    )
    sid = f.genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="gpt4chat"), metadata=f.md, timeout=TIMEOUT).session.session_id
    lines = [
        (genie_pb2.ACTOR_SYSTEM, "You are a tax assistant."),
        (genie_pb2.ACTOR_USER, "What is VAT?"),
        (genie_pb2.ACTOR_ASSISTANT, "A tax on consumption, charged at each step of the supply chain."),
        (genie_pb2.ACTOR_USER, "And <|endoftext|> here is only text."),
    ]
    for actor, text in lines:
        f.genie.AppendDialogue(genie_pb2.AppendDialogueRequest(session_id=sid, actor=actor, actor_text=text), metadata=f.md, timeout=TIMEOUT)
    session = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=sid), metadata=f.md, timeout=TIMEOUT).session
    whole = f.genie.FormatDialogue(genie_pb2.FormatDialogueRequest(session_id=sid, format=genie_pb2.DIALOGUE_FORMAT_CHAT), metadata=f.md, timeout=TIMEOUT)
    # A budget below the whole: the system element stays, the oldest others go.
    budget = whole.token_count - 1
    within = f.genie.FormatDialogue(
        genie_pb2.FormatDialogueRequest(session_id=sid, format=genie_pb2.DIALOGUE_FORMAT_JSON, token_budget=budget), metadata=f.md, timeout=TIMEOUT
    )
    check(within.token_count <= budget, f"{within.token_count} tokens rendered within a budget of {budget}")
    try:
        f.genie.FormatDialogue(genie_pb2.FormatDialogueRequest(session_id=sid, format=genie_pb2.DIALOGUE_FORMAT_CHAT, token_budget=-1), metadata=f.md, timeout=TIMEOUT)
        raise AssertionError("a negative token_budget was accepted")
    except grpc.RpcError as err:
        violations = unpack(status_details(err), error_details_pb2.BadRequest)[0].field_violations
        refused = {"code": err.code().name, "fields": [v.field for v in violations]}
    return {
        "texts": [d.actor_text for d in session.dialogue],
        "token_counts": [d.token_count for d in session.dialogue],
        "dialogue_token_count": session.dialogue_token_count,
        "whole": {"text": whole.text, "token_count": whole.token_count, "encoding": whole.tokenizer_encoding},
        "budget": budget,
        "within": {
            "text": within.text,
            "token_count": within.token_count,
            "element_count": within.element_count,
            "omitted": within.omitted_element_count,
            "encoding": within.tokenizer_encoding,
        },
        "refused": refused,
    }


def prompt_import(f):
    """ImportPrompt, a client stream: header, history, tool call, trailer; then a second import of the key."""
    key = uuid.uuid4().hex * 2
    created = timestamp_pb2.Timestamp()
    created.FromJsonString("2024-03-01T10:00:00Z")
    logged = timestamp_pb2.Timestamp()
    logged.FromJsonString("2024-03-01T10:00:01.500Z")
    records = [
        prompt_pb2.PromptRecord(
            header=prompt_pb2.PromptRecordHeader(
                session_key=key, name="imported", llm_client_id=f.ids["llm_client"], create_time=created, update_time=created, tags=["migrated"]
            )
        ),
        prompt_pb2.PromptRecord(
            history=prompt_pb2.PromptRecordHistory(
                messages=[prompt_pb2.ChatMessage(role=prompt_pb2.CHAT_ROLE_USER, content="hello from smarter")], create_time=logged
            )
        ),
        prompt_pb2.PromptRecord(tool_call=prompt_pb2.PromptRecordToolCall(function_name="get_time", function_args="{}", create_time=logged)),
        prompt_pb2.PromptRecord(trailer=prompt_pb2.PromptRecordTrailer(history_count=1, tool_call_count=1)),
    ]
    reply = f.prompt.ImportPrompt(iter([prompt_pb2.ImportPromptRequest(record=r) for r in records]), metadata=f.md, timeout=TIMEOUT)
    history = f.prompt.ListHistory(prompt_pb2.ListHistoryRequest(prompt_id=reply.prompt.id), metadata=f.md, timeout=TIMEOUT).history
    try:
        f.prompt.ImportPrompt(iter([prompt_pb2.ImportPromptRequest(record=r) for r in records]), metadata=f.md, timeout=TIMEOUT)
        again = "OK"
    except grpc.RpcError as err:
        again = err.code().name
    return {
        "session_key": reply.prompt.session_key,
        "expected_key": key,
        "create_time": reply.prompt.create_time.ToJsonString(),
        "revision": reply.prompt.revision,
        "counts": [reply.history_count, reply.tool_call_count, reply.plugin_usage_count],
        "history_times": [h.create_time.ToJsonString() for h in history],
        "again": again,
    }


DEFAULT_CHAT_MESSAGES = [
    {"role": "CHAT_ROLE_USER", "contentParts": [{"text": "What is this?"}, {"imageUrl": {"url": "https://example.com/cat.png", "detail": "low"}}]},
    {"role": "CHAT_ROLE_ASSISTANT", "contentShape": "CHAT_CONTENT_SHAPE_NULL", "refusal": "No."},
    {"role": "CHAT_ROLE_SMARTER", "content": "Plugin weather selected."},
]


def chat_messages(f):
    as_json = json.loads(os.environ.get("PARLEY_CHAT_MESSAGES") or "null") or DEFAULT_CHAT_MESSAGES
    messages = [json_format.ParseDict(m, prompt_pb2.ChatMessage()) for m in as_json]
    prompt_id = f.prompt.OpenPrompt(prompt_pb2.OpenPromptRequest(llm_client_id=f.ids["llm_client"]), metadata=f.md, timeout=TIMEOUT).prompt.id
    f.prompt.AppendHistory(prompt_pb2.AppendHistoryRequest(prompt_id=prompt_id, messages=messages), metadata=f.md, timeout=TIMEOUT)
    listed = f.prompt.ListHistory(prompt_pb2.ListHistoryRequest(prompt_id=prompt_id), metadata=f.md, timeout=TIMEOUT)
    read = f.prompt.GetPromptHistory(prompt_pb2.GetPromptHistoryRequest(id=prompt_id), metadata=f.md, timeout=TIMEOUT)

    def printed(ms):
        return [json.dumps(json_format.MessageToDict(m), ensure_ascii=False, separators=(",", ":")) for m in ms]

    return {
        "sent": printed(messages),
        "listed": printed(listed.history[0].messages),
        "read": printed(read.prompt_history),
        "equal": list(listed.history[0].messages) == messages,
    }


def labels_search(f):
    """Labels on sessions and prompts, a ListSessions filter and order_by with total_size, a refused filter."""
    f.genie.RegisterModelType(
        genie_pb2.RegisterModelTypeRequest(
            model_type=genie_pb2.ModelType(
                name="labelled",
                schema_version=1,
                state_machine=genie_pb2.StateMachine(
                    states=["open", "closed"],
                    initial_state="open",
                    transitions=[genie_pb2.Transition(from_state="open", event_name="close", to_state="closed", actor=genie_pb2.ACTOR_USER)],
                ),
            )
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    )

    def create(labels):
        req = genie_pb2.CreateSessionRequest(model_type="labelled", labels=labels)
        return f.genie.CreateSession(req, metadata=f.md, timeout=TIMEOUT).session

    made = [create({"team": "py", "n": str(i)}) for i in range(3)] + [create({"team": "other"})]
    f.genie.SendEvent(genie_pb2.SendEventRequest(session_id=made[1].session_id, event_name="close", actor_input="done"), metadata=f.md, timeout=TIMEOUT)
    relabelled = f.genie.UpdateSession(
        genie_pb2.UpdateSessionRequest(
            session=genie_pb2.GenieSession(session_id=made[2].session_id, labels={"team": "py", "n": "2", "star": "yes"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
        ),
        metadata=f.md,
        timeout=TIMEOUT,
    ).session

    listed, totals, token = [], [], ""
    while True:
        page = f.genie.ListSessions(
            genie_pb2.ListSessionsRequest(filter='labels.team = "py"', order_by="create_time desc", page_size=2, page_token=token, show_total_size=True),
            metadata=f.md,
            timeout=TIMEOUT,
        )
        listed += [s.labels["n"] for s in page.sessions]
        totals.append(page.total_size)
        token = page.next_page_token
        if not token:
            break
    closed = f.genie.ListSessions(genie_pb2.ListSessionsRequest(filter='model_type = "labelled" AND state = "closed"'), metadata=f.md, timeout=TIMEOUT)
    starred = f.genie.ListSessions(genie_pb2.ListSessionsRequest(filter="labels.star:*"), metadata=f.md, timeout=TIMEOUT)
    refused = failure(lambda: f.genie.ListSessions(genie_pb2.ListSessionsRequest(filter='labels.team = "py" OR labels.team = "other"'), metadata=f.md, timeout=TIMEOUT))
    prompt = f.prompt.OpenPrompt(prompt_pb2.OpenPromptRequest(llm_client_id=f.ids["llm_client"], labels={"team": "py"}), metadata=f.md, timeout=TIMEOUT).prompt
    prompts = f.prompt.ListPrompts(prompt_pb2.ListPromptsRequest(filter='labels.team = "py"', show_total_size=True), metadata=f.md, timeout=TIMEOUT)
    return {
        "labels": dict(relabelled.labels),
        "listed": listed,
        "totals": totals,
        "closed": [s.labels["n"] for s in closed.sessions],
        "starred": [s.session_id == made[2].session_id for s in starred.sessions],
        "refused": refused,
        "prompt_labels": dict(prompt.labels),
        "prompts_total": prompts.total_size,
    }


def session_transfer(f):
    """Export a session (every revision) and import it back as a new one: the same revisions and dialogue."""
    try:
        f.genie.RegisterModelType(
            genie_pb2.RegisterModelTypeRequest(
                model_type=genie_pb2.ModelType(
                    name="moved",
                    schema_version=1,
                    state_machine=genie_pb2.StateMachine(
                        states=["open"],
                        initial_state="open",
                        transitions=[genie_pb2.Transition(from_state="open", event_name="say", to_state="open", actor=genie_pb2.ACTOR_USER)],
                    ),
                )
            ),
            metadata=f.md,
            timeout=TIMEOUT,
        )
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    sid = f.genie.CreateSession(genie_pb2.CreateSessionRequest(model_type="moved", fields=struct({"n": 1})), metadata=f.md, timeout=TIMEOUT).session.session_id
    f.genie.SendEvent(genie_pb2.SendEventRequest(session_id=sid, event_name="say", actor_input="hello ✓"), metadata=f.md, timeout=TIMEOUT)
    f.genie.PutSecondary(genie_pb2.PutSecondaryRequest(session_id=sid, key="blob", value=bytes([0, 1, 2])), metadata=f.md, timeout=TIMEOUT)
    records = [r.record for r in f.genie.ExportSession(genie_pb2.ExportSessionRequest(session_id=sid, all_revisions=True), metadata=f.md, timeout=TIMEOUT)]
    kinds = [r.WhichOneof("record") for r in records]
    check(kinds[0] == "header" and kinds[-1] == "trailer", f"an export is header … trailer, got {kinds}")

    def requests():
        for i, r in enumerate(records):
            yield genie_pb2.ImportSessionRequest(record=r, request_id=str(uuid.uuid4()) if i == 0 else "")

    res = f.genie.ImportSession(requests(), metadata=f.md, timeout=TIMEOUT)
    new = res.session.session_id
    check(new != sid, "a new id")
    for rev in (1, 2, 3):
        a = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=sid, revision=rev), metadata=f.md, timeout=TIMEOUT).session
        b = f.genie.GetSession(genie_pb2.GetSessionRequest(session_id=new, revision=rev), metadata=f.md, timeout=TIMEOUT).session
        a.session_id = b.session_id = ""
        check(a == b, f"revision {rev} reads the same")
    value = f.genie.GetSecondary(genie_pb2.GetSecondaryRequest(session_id=new, key="blob"), metadata=f.md, timeout=TIMEOUT).value
    check(value == bytes([0, 1, 2]), "the secondary value moved")
    return {"records": len(records), "kinds": sorted(set(kinds)), "revision_count": res.revision_count, "element_count": res.element_count, "secondary_count": res.secondary_count}


STEPS = [admin_setup, error_details, prompt_with_logs, genie_session_watch, end_user_erasure, genie_delta_resume, genie_token_budget, chat_messages, session_transfer, prompt_import, labels_search]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    flow = Flow(sys.argv[2], sys.argv[3])
    by_name = {s.__name__: s for s in STEPS}
    names = sys.argv[4:] or [s.__name__ for s in STEPS]
    for name in names:
        if name not in by_name:
            sys.exit(f"unknown step {name!r}; steps: {', '.join(by_name)}")
    try:
        for name in names:
            facts = by_name[name](flow)
            print(json.dumps({"step": name, **facts}), flush=True)
    finally:
        flow.channel.close()


if __name__ == "__main__":
    main()
