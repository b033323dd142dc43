"""`mfdepth demo` end to end on the tiny world: every stage, the evaluation of four networks, the report."""

import json

from mfdepth.cli import main


def test_demo_writes_report_with_metrics_and_figures(tmp_path, capsys):
    run_dir, world = tmp_path / "run", tmp_path / "world"
    code = main([
        "demo", "--quiet", "--run-dir", str(run_dir), "--data", str(world),
        "data.synth_preset=tiny", "data.num_workers=0", "model.num_depth_bins=8", "train.batch_size=2",
        "train.pretrain_steps=2", "train.warmup_steps=1", "train.pose_prior_steps=1", "train.teacher_steps=1",
        "train.student_steps=2",
    ])
    assert code == 0
    report = run_dir / "report"
    for name in ("report.md", "depth_baseline_vs_full.png", "mask_vs_true_motion.png", "loss_curves.png",
                 "convergence.png"):
        assert (report / name).stat().st_size > 0, name
    metrics = json.loads((report / "metrics.json").read_text())
    rows = [k for k in metrics if k not in ("masks", "poses", "seconds")]
    assert len(rows) == 5  # S0, M0, S*, M, and M made metric by the camera height
    assert any("camera height" in row and not metrics[row]["median_scaling"] for row in rows)
    curve = json.loads((report / "convergence.json").read_text())
    stages = [point["stage"] for point in next(iter(curve["runs"].values()))]
    assert stages == ["pretrain", "teacher", "student"]  # the last step of every training stage is scored
    for row in rows:
        result = metrics[row]
        assert result["num_evaluated"] == result["num_frames"] > 0
        assert 0.0 < result["metrics"]["all"]["abs_rel"] < 10.0
        assert result["metrics"]["moving"] is not None  # the test sequence has moving objects
    assert len(metrics["poses"]) == 2
    for errors in metrics["poses"].values():
        assert errors["num_pairs"] == metrics[rows[0]]["num_frames"]  # every test frame has a previous one
    printed = capsys.readouterr().out
    assert "full method (M)" in printed and "translation direction error" in printed
    assert "(`train.precision=auto`)" in printed and ("arithmetic float32" in printed or "arithmetic bfloat16" in printed)


def test_stage_error_is_one_line(tmp_path, capsys):
    code = main(["train", "--stage", "teacher", "--run-dir", str(tmp_path / "r"), "data.root=" + str(tmp_path / "w"),
                 "data.synth_preset=tiny", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--stage pretrain" in err and len(err.splitlines()) == 1
