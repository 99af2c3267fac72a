#!/usr/bin/env python3
"""Policy mode's CEL under a second interpreter: cel-cpp (Google's C++ CEL, through the
cel-expr-python package), whose `matches` is RE2 itself, as cel-go's is.

Reads a JSON file {"configs": [{"policy": <MutatingAdmissionPolicy>, "pods": [{"name",
"pod", "add", "injected"}]}]} written by tests/admission_policy.rs, where "add" and
"injected" are what the webhook did to the Pod (null "injected": no patch). Each variable is
type-checked as the API server declares it (`variables.<name>` of its expression's output
type, after `object` as dyn), each Pod evaluated through the matchConditions and the
variables in order, and `variables.add` and `variables.injected` compared with the webhook.
Prints one line per disagreement and a count; exits 1 on any disagreement or error.
"""

import json
import sys

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings


def compile_policy(spec):
    extensions = [ext_strings.ExtStrings()]
    declared = {"object": cel.Type.DYN}
    variables = []
    for variable in spec["variables"]:
        env = cel.NewEnv(variables=declared, extensions=extensions)
        program = env.compile(variable["expression"])
        declared = dict(declared)
        declared["variables." + variable["name"]] = program.return_type()
        variables.append((variable["name"], program))
    env = cel.NewEnv(variables=declared, extensions=extensions)
    conditions = [(c["name"], env.compile(c["expression"])) for c in spec["matchConditions"]]
    return conditions, variables


def decide(conditions, variables, pod):
    """What the policy adds to `pod`, and the annotation it writes (None: no patch)."""
    data = {"object": pod}
    for name, program in conditions:
        result = program.eval(data=data).plain_value()
        if result is not True:
            if result is False:
                return [], None
            raise ValueError(f"matchCondition {name}: {result!r}")
    for name, program in variables:
        data["variables." + name] = program.eval(data=data).plain_value()
    add = data["variables.add"]
    return add, (data["variables.injected"] if add else None)


def main(path):
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    failures = []
    checked = 0
    for config in document["configs"]:
        spec = config["policy"]["spec"]
        try:
            conditions, variables = compile_policy(spec)
        except Exception as error:  # a compile error is a finding, not a crash
            failures.append(f"does not compile: {error}")
            continue
        for case in config["pods"]:
            checked += 1
            try:
                got = decide(conditions, variables, case["pod"])
            except Exception as error:
                failures.append(f"{case['name']}: evaluation error: {error}")
                continue
            expected = (case["add"], case["injected"])
            if list(got) != list(expected):
                failures.append(f"{case['name']}: cel-cpp {got!r}, webhook {expected!r}")
    for line in failures:
        print(line)
    print(f"{checked} Pods checked, {len(failures)} disagreements")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
