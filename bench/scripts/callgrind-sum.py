#!/usr/bin/env python3
"""Sums a callgrind dump (--dump-instr=no) for one function: its inclusive Ir and how often it
and a second function were called.

usage: callgrind-sum.py FILE FUNCTION [CALLEE]
prints: incl_ir=N calls=N [callee_calls=N]   (FUNCTION and CALLEE match by exact name)

Inclusive Ir = the function's own cost lines plus the inclusive cost of every call it makes
(the cost line after each `calls=` line), as callgrind_annotate --inclusive=yes computes it
for non-recursive functions. Call counts are the `calls=` lines whose target (cfn) is the
function, from any caller.
"""
import re
import sys


def main():
    path, func = sys.argv[1], sys.argv[2]
    callee = sys.argv[3] if len(sys.argv) > 3 else None
    names = {}
    cur = None  # current fn name
    target = None  # cfn of the pending calls= line
    pending_call = False
    self_ir = incl_calls = 0
    calls = {func: 0, callee: 0}
    ref = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def name_of(spec):
        m = ref.match(spec)
        if not m:
            return spec
        i, n = m.group(1), m.group(2)
        if n is not None:
            names[i] = n
        return names.get(i, spec)

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if pending_call:
                pending_call = False
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if cur == func:
                    incl_calls += ir
                continue
            if line.startswith("fn="):
                cur = name_of(line[3:])
            elif line.startswith("cfn="):
                target = name_of(line[4:])
            elif line.startswith(("cfi=", "cfl=")):
                name_of(line[4:])
            elif line.startswith(("fl=", "fi=", "fe=")):
                name_of(line[3:])
            elif line.startswith(("ob=", "cob=")):
                pass
            elif line.startswith("calls="):
                n = int(line[6:].split()[0])
                if target in calls:
                    calls[target] += n
                pending_call = True
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                if cur == func and len(parts) > 1:
                    self_ir += int(parts[1])
    out = f"incl_ir={self_ir + incl_calls} calls={calls[func]}"
    if callee:
        out += f" callee_calls={calls[callee]}"
    print(out)


if __name__ == "__main__":
    main()
