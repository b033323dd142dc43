"""``mfdepth evaluate``: score a checkpoint on a split with the field's protocol."""

from __future__ import annotations

NAME = "evaluate"
HELP = "Evaluate a checkpoint (AbsRel, SqRel, RMSE, RMSElog, d<1.25^k; static/moving split on the synthetic world)."


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (its config names the data)")
    parser.add_argument("--network", default="auto", choices=["auto", "multi", "single"],
                        help="multi-frame net (default when present) or the single-frame teacher")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"])
    parser.add_argument("--no-median-scaling", action="store_true", help="report metric-scale errors")
    parser.add_argument("--camera-height", type=float, default=None, metavar="METRES",
                        help="metric depth from the known camera height (ground plane fitted to each prediction) "
                             "instead of median scaling (KITTI 1.65, the synthetic world 1.65)")
    parser.add_argument("--poses", action="store_true",
                        help="also score the pose net against true camera poses (worlds from `mfdepth synth`)")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 or auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="changes to the checkpoint's config, e.g. data.root=/data/kitti eval.protocol=kitti")


def run(args) -> int:
    from mfdepth.devices import resolve_device
    from mfdepth.evaluation.report import format_table, write_json
    from mfdepth.evaluation.runner import evaluate_checkpoint

    device = resolve_device(args.device)
    evaluation = evaluate_checkpoint(
        args.checkpoint, network=args.network, split=args.split, overrides=args.overrides,
        median_scaling=False if args.no_median_scaling else None, device=device, progress=not args.quiet,
        camera_height=args.camera_height,
    )
    print(f"{evaluation.checkpoint} ({evaluation.network}-frame network)")
    print(format_table(evaluation.result))
    if args.poses:
        from mfdepth.evaluation.poses import evaluate_poses

        errors = evaluate_poses(args.checkpoint, split=args.split, overrides=args.overrides, device=device)
        print(
            f"pose net on {errors['num_pairs']} pairs ({errors['num_moving']} moving): rotation error "
            f"{errors['rotation_deg']:.3f} deg, translation direction error {errors['direction_deg']:.2f} deg, "
            f"translation error {errors['translation_m']:.3f} m after scaling by {errors['scale']:.3f}"
        )
    if args.json:
        path = write_json(evaluation.result, args.json)
        print(f"written: {path}")
    return 0
