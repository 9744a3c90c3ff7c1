#!/usr/bin/env python3
"""A Python client of the ARF gateway, generated from proto/ with grpcio-tools.

Creates a pipeline run from a JSONL file of conversations with their teacher summaries
(streamed to the gateway row by row), watches its events to the end, reconnecting with the
last sequence number it saw when the stream breaks, and exits 0 only if the run succeeded.

    python clients/python/arf_client.py --gateway localhost:50050 --dataset arf/data/sample_conversations.jsonl

The stubs are generated into --generated (a temporary folder by default) at start, so they
always match the protos next to this script.
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "..", "proto")


def generate_stubs(out_dir):
    """Runs grpcio-tools' protoc over proto/arf/v1 into out_dir and puts it on sys.path."""
    from grpc_tools import protoc

    os.makedirs(out_dir, exist_ok=True)
    proto_dir = os.path.join(PROTO_ROOT, "arf", "v1")
    protos = sorted(os.path.join(proto_dir, f) for f in os.listdir(proto_dir) if f.endswith(".proto"))
    # grpc_tools ships the well-known types (google/protobuf/*.proto) beside its own module.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        sys.exit("generating the Python stubs from proto/ failed")
    sys.path.insert(0, out_dir)


ROLES = {"customer": 1, "agent": 2, "bot": 3, "system": 4}
STAGES = {"generate": 5, "analyze": 1, "revise": 2, "finetune": 3, "evaluate": 4}


def dataset_rows(pb, path):
    """The file's rows as DatasetRow messages; a bad row stops the client with its line number."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                turns = [pb.common.Turn(role=ROLES[t["role"]], text=t["text"]) for t in record["turns"]]
                conversation = pb.common.Conversation(id=record["id"], channel=record.get("channel", ""), turns=turns)
                yield pb.pipeline.DatasetRow(
                    line=line_no,
                    conversation=conversation,
                    teacher_summary=record.get("summary", ""),
                    references=record.get("references", []),
                )
            except (ValueError, KeyError, TypeError) as e:
                sys.exit(f"{path}:{line_no}: {e!r}")


def create_run(pb, stub, args, metadata):
    config = pb.pipeline.RunConfig(
        stages=[STAGES[s] for s in args.stages.split(",") if s],
        revision_rounds=args.revision_rounds,
        revision_max_tokens=args.revision_max_tokens,
        training=pb.trainer.Hyperparameters(max_steps=args.train_steps, learning_rate=1e-3, max_seq_len=256),
        evaluation=pb.pipeline.EvaluationConfig(holdout_fraction=0.25, seed=7, max_summary_tokens=24),
    )
    spec = pb.pipeline.RunSpec(display_name="python client", config=config)

    def requests():
        yield pb.pipeline.CreateRunRequest(spec=spec)
        sent = 0
        for row in dataset_rows(pb, args.dataset):
            yield pb.pipeline.CreateRunRequest(row=row)
            sent += 1
        # Closes the dataset: without it the gateway treats the upload as broken and runs nothing.
        yield pb.pipeline.CreateRunRequest(end=pb.pipeline.DatasetEnd(rows=sent))

    return stub.CreateRun(requests(), metadata=metadata, timeout=60)


def describe(pb, event):
    kind = event.WhichOneof("kind")
    if kind == "state":
        return "run " + pb.pipeline.RunState.Name(event.state)
    if kind == "stage":
        verb = "started" if event.stage.started else "ended"
        return f"{pb.pipeline.Stage.Name(event.stage.stage)} {verb}"
    if kind == "item":
        return f"{pb.pipeline.Stage.Name(event.item.stage)} {event.item.conversation_id}: {event.item.outcome}"
    if kind == "training":
        return f"training: {event.training.WhichOneof('kind')}"
    if kind == "bad_row":
        return f"bad row at line {event.bad_row.line}"
    return f"{kind}: {getattr(event, kind)}"


def watch(pb, stub, run_id, metadata):
    """Every event of the run to its end; on a broken stream, reconnects after the last one seen."""
    import grpc

    last, final_state, attempts = 0, None, 0
    while True:
        try:
            for event in stub.WatchRun(pb.pipeline.WatchRunRequest(run_id=run_id, after_sequence=last), metadata=metadata):
                if event.sequence != last + 1:
                    sys.exit(f"event {event.sequence} follows {last}: an event was lost")
                last = event.sequence
                if event.WhichOneof("kind") == "state":
                    final_state = event.state
                print(f"#{event.sequence} {describe(pb, event)}", flush=True)
            return last, final_state
        except grpc.RpcError as e:
            attempts += 1
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL) or attempts > 5:
                raise
            print(f"stream broke ({e.code().name}); reconnecting after #{last}", flush=True)
            time.sleep(0.5 * attempts)


class Protos:
    """The generated modules, under short names."""

    def __init__(self):
        from arf.v1 import common_pb2, pipeline_pb2, pipeline_pb2_grpc, trainer_pb2

        self.common, self.pipeline, self.pipeline_grpc, self.trainer = common_pb2, pipeline_pb2, pipeline_pb2_grpc, trainer_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="host:port of the gateway")
    parser.add_argument("--dataset", required=True, help="JSONL file of conversations with teacher summaries")
    parser.add_argument("--token", default=os.environ.get("ARF_TOKEN"), help="bearer token, when the gateway requires one")
    parser.add_argument("--stages", default="analyze,revise,finetune,evaluate")
    parser.add_argument("--revision-rounds", type=int, default=1)
    parser.add_argument("--revision-max-tokens", type=int, default=0, help="0: the editor's default")
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--generated", help="folder for the generated stubs (default: a temporary one)")
    args = parser.parse_args()

    generate_stubs(args.generated or tempfile.mkdtemp(prefix="arf-python-"))
    import grpc

    pb = Protos()
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with grpc.insecure_channel(args.gateway) as channel:
        stub = pb.pipeline_grpc.PipelineStub(channel)
        run = create_run(pb, stub, args, metadata)
        print(f"run {run.id} created with {run.counts.rows} rows", flush=True)
        last, state = watch(pb, stub, run.id, metadata)
        run = stub.GetRun(pb.pipeline.GetRunRequest(run_id=run.id), metadata=metadata, timeout=30)
        c = run.counts
        print(
            f"run {run.id} ended {pb.pipeline.RunState.Name(run.state)} after {last} events: rows={c.rows} analyzed={c.analyzed} "
            f"flagged={c.flagged} accepted={c.revisions_accepted} rejected={c.revisions_rejected} "
            f"training_examples={c.training_examples} held_out={c.held_out} evaluated={c.evaluated}",
            flush=True,
        )
        if state != run.state:
            sys.exit(f"the last state event ({state}) disagrees with GetRun ({run.state})")
        if run.state != pb.pipeline.RUN_STATE_SUCCEEDED:
            sys.exit(f"run ended {pb.pipeline.RunState.Name(run.state)}: {run.error}")


if __name__ == "__main__":
    main()
