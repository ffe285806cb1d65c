"""t/fault/run: the fault matrix under load (see mxj_fault.py); prints
each row as it ends and the table for docs/reliability.md; exits 1 when
any row failed."""

import argparse
import json
import sys
import time

import mxj_fault


def main():
    ap = argparse.ArgumentParser(prog="t/fault/run")
    ap.add_argument("faults", nargs="*", help="rows to run (default: all): "
                    + ", ".join(mxj_fault.FAULTS))
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="load per row (default 20)")
    ap.add_argument("--rate", type=int, default=120,
                    help="requests/s offered (default 120; a row may run "
                    "at a lower rate of its own, big-room at 60)")
    ap.add_argument("--members", type=int,
                    help="members of big-room's large room (default "
                    "20000)")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args()
    faults = a.faults or list(mxj_fault.FAULTS)
    for f in faults:
        if f not in mxj_fault.FAULTS:
            ap.error(f"unknown fault {f}")
    rows = []
    for i, f in enumerate(faults):
        t0 = time.monotonic()
        row = mxj_fault.run_row(f, seconds=a.seconds, rate=a.rate,
                                threads=a.threads, seed=i,
                                members=a.members if f == "big-room"
                                else None)
        row["elapsed"] = time.monotonic() - t0
        rows.append(row)
        print(f"{f}: {row['requests']} requests at {row['rate']}/s, "
              f"{row['ok200']} send_join 200, lost {row['lost']}, "
              f"redelivered {row['redelivered']} (2xx while Redis was down "
              f"{row['acks_in_outage']}), left in outbox "
              f"{row['left_in_outbox']}, other {row['errors']}, max "
              f"{row['max_latency'] * 1000:.0f} ms, largest send_join "
              f"answer {row['max_answer_bytes']:,} bytes "
              f"({row['big_answers']} over 1 MB), forwarder "
              f"reconnected {row['redis_reconnects']}x, joins answered "
              f"again {row['answered_again_s']:.1f} s after the fault "
              f"({row['elapsed']:.0f} s)", flush=True)
        for p in row["problems"]:
            print("   PROBLEM:", p, flush=True)
    print()
    print(mxj_fault.table(rows))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
