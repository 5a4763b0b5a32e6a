#!/usr/bin/env python3
"""Turns the JSONL trajectory of a real run into a replay fixture for crates/rlm/tests/engine/small_models.rs.

The fixture keeps what the model said (root-loop replies, its reply when asked for a final answer after a limit, and
llm_query answers, in order), the query, the context
(inline, or as the `rlm bench sniah` task that regenerates it) and the expected answer. The test replays the replies
through the scripted OpenAI-compatible server against today's runtime.

    scripts/fixture-from-trace.py TRACE.jsonl --name NAME --expected 1234567 --recorded-with TEXT \
        (--context FILE | --sniah SEED:SIZES:TASKS:ID) --mode "what went wrong" [--mode ...] > fixture.json

--sniah 1:8k,32k,128k:5:128k-4 names the task `rlm bench sniah --sizes 8k,32k,128k --tasks 5 --seed 1` calls 128k-4.
"""
import argparse
import json
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--name", required=True)
    parser.add_argument("--expected", required=True)
    parser.add_argument("--recorded-with", required=True)
    parser.add_argument("--context")
    parser.add_argument("--sniah")
    parser.add_argument("--mode", action="append", default=[])
    args = parser.parse_args()

    events = [json.loads(line) for line in open(args.trace, encoding="utf-8") if line.strip()]
    top = next(e for e in events if e["type"] == "metadata" and e["depth"] == 0)
    run_id = top["run_id"]
    turns, final_answer, sub_answers, final = [], None, [], None
    for event in events:
        if event["run_id"] != run_id:
            continue
        if event["type"] == "model_call" and event.get("response") is not None:
            if event["purpose"] == "final_answer":
                final_answer = event["response"]
            else:
                turns.append(event["response"])
        elif event["type"] == "sub_call" and event.get("response") is not None:
            sub_answers.append(event["response"])
        elif event["type"] == "final":
            final = {"answer": event.get("answer"), "finished_by": event["finished_by"]}
    if args.context:
        context = {"inline": open(args.context, encoding="utf-8").read()}
    elif args.sniah:
        seed, sizes, tasks, task_id = args.sniah.split(":")
        context = {"sniah": {"seed": int(seed), "sizes": sizes.split(","), "tasks": int(tasks), "id": task_id}}
    else:
        sys.exit("give --context FILE or --sniah SEED:SIZES:TASKS:ID")
    fixture = {
        "name": args.name,
        "recorded_with": args.recorded_with,
        "failure_modes": args.mode,
        "model": top["root_model"],
        "query": top["query"],
        "expected": args.expected,
        "context": context,
        "turns": turns,
        "final_answer": final_answer,
        "sub_answers": sub_answers,
        "outcome_when_recorded": final,
    }
    json.dump(fixture, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
