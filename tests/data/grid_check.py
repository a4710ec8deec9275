#!/usr/bin/env python3
"""Run `retort privacy epsilon/calibrate` over tests/data/accounting.json and print the worst
relative errors per accountant and the slowest row. Usage: python3 tests/data/grid_check.py [RETORT_BIN]"""
import json, subprocess, sys, time, os
bin_ = sys.argv[1] if len(sys.argv) > 1 else "target/release/retort"
ref = json.load(open(os.path.join(os.path.dirname(__file__), "accounting.json")))
worst = {"rdp": (0, None), "pld_below": (0, None), "pld_above": (0, None), "pld_only": (0, None)}
slow = (0, None)
def run(args):
    t = time.time()
    out = subprocess.run([bin_] + args + ["--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1]), time.time() - t
for r in ref["rows"]:
    key = (r["q"], r["sigma"], r["steps"], r["delta"])
    j, dt = run(["privacy", "epsilon", "--q", str(r["q"]), "--sigma", str(r["sigma"]), "--steps", str(r["steps"]), "--delta", str(r["delta"])])
    slow = max(slow, (dt, key))
    rel = (j["epsilon_rdp"] - r["eps_rdp"]) / r["eps_rdp"]
    if abs(rel) > abs(worst["rdp"][0]): worst["rdp"] = (rel, key)
    if r["eps_pld"] and r["eps_pld"] > 1e-3:
        rel = (j["epsilon"] - r["eps_pld"]) / r["eps_pld"]
        if rel < worst["pld_below"][0]: worst["pld_below"] = (rel, key)
        if rel > worst["pld_above"][0]: worst["pld_above"] = (rel, key)
        relp = (j["epsilon_pld"] - r["eps_pld"]) / r["eps_pld"]
        if abs(relp) > abs(worst["pld_only"][0]): worst["pld_only"] = (relp, key)
for k, v in worst.items(): print(f"{k:10s} worst rel {v[0]:+.3e} at (q, sigma, steps, delta) = {v[1]}")
print(f"slowest row {slow[0]:.2f}s at {slow[1]}")
wc = (0, None)
for c in ref["calibration"]:
    if not c["sigma_pld"] or c["note"]: continue
    j, dt = run(["privacy", "calibrate", "--epsilon", str(c["target_eps"]), "--q", str(c["q"]), "--steps", str(c["steps"]), "--delta", str(c["delta"])])
    rel = (j["sigma"] - c["sigma_pld"]) / c["sigma_pld"]
    print(f"calibrate q={c['q']} T={c['steps']} eps={c['target_eps']}: sigma {j['sigma']:.4f} vs dp_accounting PLD {c['sigma_pld']:.4f} ({rel:+.2%}) {dt:.1f}s")
