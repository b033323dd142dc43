"""Where does the depth inconsistency mask of a pretrain checkpoint raise false alarms?

Prints, on the embedded world's test split, the mask's IoU / precision / recall for a few rule settings
(blob removal, lower ratio 0.5, ground check off), the share of static pixels flagged per true-depth bin
and per image-row band, and the rule with the true depth in place of D_r or D_o (docs/convergence.md,
"Which pixels the mask flags").

    python benchmarks/mask_false_alarms.py RUN/checkpoints/pretrain.ckpt [data/synthetic]
"""
import sys

import torch
import torch.nn.functional as F

from mfdepth.config import apply_overrides, config_from_dict
from mfdepth.evaluation.convergence import ConvergenceJudge
from mfdepth.masks import compute_dynamic_mask, mask_quality
from mfdepth.models.factory import build_multi, build_pose, build_single
from mfdepth.training.checkpoint import load_checkpoint

ck = load_checkpoint(sys.argv[1])
meta = ck["meta"]
config = apply_overrides(config_from_dict(meta["config"]), ["data.root=" + (sys.argv[2] if len(sys.argv) > 2 else "data/synthetic")])
judge = ConvergenceJudge(config)
single, pose, multi = build_single(config), build_pose(config), build_multi(config, msff=bool(meta.get("msff", False)), fine_matching=meta.get("fine_matching"), cost_hint=bool(meta.get("cost_hint", False)))
for net, key in ((single, "single"), (multi, "multi"), (pose, "pose")):
    net.load_state_dict(ck["models"][key])
    net.eval()
t, p, K = judge.target, judge.previous, judge.K
with torch.no_grad():
    T = pose(t, p, source_is_before=True)
    ds = torch.cat([single(t[i:i+8])["depth"][0] for i in range(0, len(t), 8)])
    dm = torch.cat([multi(t[i:i+8], p[i:i+8], T[i:i+8], K[i:i+8])["depth"][0] for i in range(0, len(t), 8)])
mv = torch.stack([torch.as_tensor(m) for m in judge.motion])[:, None] > 0.5
mv = F.interpolate(mv.float(), size=ds.shape[-2:], mode="nearest").bool()
print("moving frac", mv.float().mean().item())
def row(name, do, dr, **kw):
    m = compute_dynamic_mask(do, dr, K, **kw)
    q = mask_quality(m, mv)
    print(f"{name:40s} {kw} iou {q['iou']:.3f} p {q['precision']:.3f} r {q['recall']:.3f} flagged {m.float().mean():.3f}")
for kw in [dict(), dict(min_blob_area=20), dict(min_blob_area=60), dict(lower_ratio=0.5), dict(lower_ratio=0.5, min_blob_area=60), dict(ground_check=False)]:
    row("M0/S0", dm, ds, **kw)
gt = torch.stack([torch.as_tensor(g) for g in judge.gts])[:, None].float()
gt = F.interpolate(gt, size=ds.shape[-2:], mode="nearest")
m = compute_dynamic_mask(dm, ds, K)
fa = m & ~mv
for lo, hi in [(0,1e-6),(1e-6,10),(10,20),(20,40),(40,80),(80,1e9)]:
    sel = (gt>=lo)&(gt<hi)&~mv
    print(f"gt depth [{lo},{hi}) static frac {sel.float().mean():.3f} flagged-in-bin {(fa&sel).float().sum()/sel.float().sum().clamp_min(1):.3f}")
H = ds.shape[-2]
for r0 in range(0, H, H//8):
    sel = torch.zeros_like(mv)
    sel[..., r0:r0+H//8, :] = True
    sel &= ~mv
    print(f"rows {r0}-{r0+H//8} flagged {(fa&sel).float().sum()/sel.float().sum():.3f}")
row("M0/true", dm, torch.where(gt>0, gt, ds))
row("true/S0", torch.where(gt>0, gt, dm), ds)
row("true/true", gt.clamp_min(0.1), gt.clamp_min(0.1))
