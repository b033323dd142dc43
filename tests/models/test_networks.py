"""Shapes, gradients, switches, weights and streaming of the networks."""

import pytest
import torch
import torchvision

from mfdepth.models import MultiFrameDepthNet, PoseNet, ResnetEncoder, SingleFrameDepthNet, StreamingDepth
from mfdepth.models.layers import bound_fractions, disp_to_depth


def _K(b, h, w):
    return torch.tensor([[0.58 * w, 0.0, (w - 1) / 2], [0.0, 1.92 * h, (h - 1) / 2], [0.0, 0.0, 1.0]]).expand(b, 3, 3)


def _small_multi(**kw):
    torch.manual_seed(0)
    return MultiFrameDepthNet(num_depth_bins=kw.pop("bins", 8), **kw)


@pytest.mark.parametrize("h, w", [(64, 96), (96, 160)])
def test_shapes_for_odd_resolutions(h, w):
    x = torch.rand(2, 3, h, w)
    single = SingleFrameDepthNet()(x)
    multi = _small_multi()(x, x, torch.eye(4).expand(2, 4, 4), _K(2, h, w))
    for out in (single, multi):
        assert [tuple(d.shape) for d in out["depth"]] == [(2, 1, h >> s, w >> s) for s in range(4)]
        assert all(((d >= 0.1 - 1e-5) & (d <= 100.0 + 1e-3)).all() for d in out["depth"])
    assert multi["cost_volume_depth"].shape == (2, 1, h // 4, w // 4)
    assert multi["cost_volume_valid"].shape == (2, 1, h // 4, w // 4)
    with pytest.raises(ValueError, match="multiple of 32"):
        SingleFrameDepthNet()(torch.rand(1, 3, 70, 96))


def test_disp_to_depth_range():
    _, depth = disp_to_depth(torch.tensor([0.0, 1.0]), 0.1, 100.0)
    assert torch.allclose(depth, torch.tensor([100.0, 0.1]))


def test_bound_fractions_count_the_pixels_within_five_percent_of_each_bound():
    # min 1, max 100: 1.04 and 1.049 are at the lower bound, 95.3 (100 / 1.05 = 95.24) and 100 at the upper.
    depth = torch.tensor([1.0, 1.04, 1.049, 1.06, 10.0, 95.0, 95.3, 100.0]).reshape(1, 1, 2, 4)
    low, high = bound_fractions(depth, 1.0, 100.0)
    assert float(low) == pytest.approx(3 / 8) and float(high) == pytest.approx(2 / 8)
    _, at_sigmoid_ends = disp_to_depth(torch.tensor([1.0, 0.0]), 1.0, 100.0)
    assert [float(f) for f in bound_fractions(at_sigmoid_ends, 1.0, 100.0)] == [0.5, 0.5]


@pytest.mark.parametrize("fine_matching, cost_hint", [(False, False), (True, False), (True, True)])
def test_gradients_reach_every_trainable_parameter(fine_matching, cost_hint):
    h, w = 64, 96
    multi, pose = _small_multi(fine_matching=fine_matching, cost_hint=cost_hint), PoseNet()
    a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    T = pose(a, b, source_is_before=True)
    out = multi(a, b, T, _K(2, h, w))
    loss = sum(d.mean() for d in out["depth"]) + T[:, :3, 3].abs().sum()
    loss.backward()
    for net in (multi, pose):
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing[:5]


def test_pose_direction_is_consistent():
    pose = PoseNet().eval()
    a, b = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        T_b_a = pose(a, b, source_is_before=False)  # source b comes after target a
        T_a_b = pose(b, a, source_is_before=True)
    assert torch.allclose(T_a_b @ T_b_a, torch.eye(4)[None], atol=1e-5)


def test_pose_pairs_in_one_pass_equal_one_pass_per_pair():
    torch.manual_seed(0)
    pose = PoseNet().eval()  # eval: batch norm by running statistics, so batching cannot change a pair
    target, before, after = (torch.rand(2, 3, 64, 96) for _ in range(3))
    with torch.no_grad():
        together = pose.forward_pairs(target, [before, after], [True, False])
        alone = [pose(target, before, source_is_before=True), pose(target, after, source_is_before=False)]
    for T, reference in zip(together, alone):
        assert torch.allclose(T, reference, atol=1e-6)
    assert not torch.allclose(together[0], together[1], atol=1e-4)
    with pytest.raises(ValueError):
        pose.forward_pairs(target, [before, after], [True])


def test_pose_downsample_sees_the_pooled_frames():
    full = PoseNet().eval()
    pooled = PoseNet(input_downsample=2).eval()
    pooled.load_state_dict(full.state_dict())
    a, b = torch.rand(1, 3, 128, 192), torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        expected = full(torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2), True)
        assert torch.allclose(pooled(a, b, True), expected, atol=1e-6)
        assert not torch.allclose(full(a, b, True), expected, atol=1e-6)
    with pytest.raises(ValueError, match="input_downsample"):
        PoseNet(input_downsample=0)


def test_msff_off_matches_on_raw_quarter_features():
    net = _small_multi(msff=False, matching_channels=0).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = net.matching_features(x)
        raw = net.encoder.layer1(net.encoder.maxpool(net.encoder.stem(x)))
    assert net.fusion is None and torch.equal(features["match"], raw) and torch.equal(features["context"], raw)
    projected = _small_multi(msff=False, matching_channels=16).eval()
    with torch.no_grad():
        assert projected.matching_features(x)["match"].shape == (1, 16, 16, 24)
    fused = _small_multi(msff=True).eval()
    with torch.no_grad():
        assert fused.matching_features(x)["context"].shape == raw.shape
    assert any(k.startswith("fusion.") for k in fused.state_dict())


@pytest.mark.parametrize("residual", [False, True])
def test_a_residual_fusion_starts_as_the_single_scale_net_whose_weights_it_takes(residual):
    # The student joins from M0 (no MSFF): every weight but the fusion's is copied. Only the residual
    # form, whose mix starts at zero, then computes exactly what M0 computes.
    baseline = _small_multi(msff=False).eval()
    torch.manual_seed(1)
    student = MultiFrameDepthNet(num_depth_bins=8, msff=True, msff_residual=residual)
    own = student.state_dict()
    copied = {k: v for k, v in baseline.state_dict().items() if k in own and own[k].shape == v.shape}
    assert set(own) - set(copied) == {k for k in own if k.startswith("fusion.")}
    student.load_state_dict(copied, strict=False)
    student.eval()
    torch.manual_seed(2)
    target, source = torch.rand(2, 3, 64, 96), torch.rand(2, 3, 64, 96)
    pose = torch.eye(4).expand(2, 4, 4).clone()
    pose[:, 2, 3] = -0.5
    with torch.no_grad():
        expected = baseline(target, source, pose, _K(2, 64, 96))["depth"][0]
        got = student(target, source, pose, _K(2, 64, 96))["depth"][0]
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6) == residual
    assert student.msff_residual == residual


@pytest.mark.parametrize("fine_matching", [False, True])
def test_zero_cost_volume_equals_zeroed_costs(fine_matching):
    net = _small_multi(fine_matching=fine_matching).eval()
    h, w = 64, 96
    a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    T = torch.eye(4).expand(2, 4, 4).clone()
    T[:, 2, 3] = -1.0
    K = _K(2, h, w)
    with torch.no_grad():
        zeroed = net(a, b, T, K, zero_cost_volume=torch.tensor([True, False]))
        plain = net(a, b, T, K)
        other_source = net(a, torch.rand(2, 3, h, w), T, K, zero_cost_volume=torch.tensor([True, False]))
    # Item 0 no longer depends on the source frame; item 1 is unchanged.
    assert torch.allclose(zeroed["depth"][0][0], other_source["depth"][0][0], atol=1e-6)
    assert torch.allclose(zeroed["depth"][0][1], plain["depth"][0][1], atol=1e-6)
    assert not torch.allclose(zeroed["depth"][0][0], plain["depth"][0][0])
    assert zeroed["cost_volume_valid"][0].sum() == 0


def test_adaptive_range_lives_in_state_dict_and_tracks_teacher():
    net = _small_multi()
    assert {"d_min", "d_max"} <= set(net.state_dict())
    teacher = torch.linspace(2.0, 40.0, 100).reshape(1, 1, 10, 10)
    for _ in range(200):
        net.update_depth_range(teacher, momentum=0.9, quantile=0.0)
    assert abs(net.d_min.item() - 2.0) < 1e-3 and abs(net.d_max.item() - 40.0) < 1e-2
    bins = net.depth_bins(3)
    assert bins.shape == (3, 8) and torch.allclose(bins[0, [0, -1]], torch.tensor([2.0, 40.0]), atol=1e-2)
    # By default a few outlier pixels (e.g. sky at the depth limit) do not stretch the range.
    robust = _small_multi()
    with_sky = teacher.clone()
    with_sky[0, 0, 0, 0] = 100.0
    for _ in range(200):
        robust.update_depth_range(with_sky, momentum=0.9)
    assert robust.d_max.item() < 41.0 and robust.d_min.item() > 2.0
    other = _small_multi()
    other.load_state_dict(net.state_dict())
    assert other.d_max.item() == net.d_max.item()


def test_imagenet_weights_load_by_torchvision_names(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    encoder = ResnetEncoder(18, 1, weights_path=path)
    assert torch.equal(encoder.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    pose_encoder = ResnetEncoder(18, 2, weights_path=path)
    assert torch.allclose(pose_encoder.conv1.weight[:, 3:], reference.conv1.weight / 2)
    with pytest.raises(FileNotFoundError, match="pretrained_weights"):
        ResnetEncoder(18, 1, weights_path=tmp_path / "missing.pth")


@pytest.mark.parametrize("fine_matching, downsample", [(False, 1), (True, 1), (True, 2)])
def test_streaming_equals_pairwise_prediction(fine_matching, downsample):
    h, w = 64, 96
    multi = _small_multi(fine_matching=fine_matching, fine_matching_downsample=downsample).eval()
    pose = PoseNet().eval()
    frames = torch.rand(4, 1, 3, h, w)
    K = _K(1, h, w)
    stream = StreamingDepth(multi, pose)
    with torch.no_grad():
        streamed = [stream.step(f, K)["depth"][0] for f in frames]
        first = multi(frames[0], frames[0], torch.eye(4)[None], K, zero_cost_volume=torch.tensor([True]))
        assert torch.allclose(streamed[0], first["depth"][0], atol=1e-5)
        for t in range(1, 4):
            T = pose(frames[t], frames[t - 1], source_is_before=True)
            pair = multi(frames[t], frames[t - 1], T, K)["depth"][0]
            assert torch.allclose(streamed[t], pair, atol=1e-5)


def _sideways_pair_through(net):
    """Two random 64x96 frames, the camera 0.5 m sideways between them, and ``net``'s output on them:
    ``(target, source, T, K, out)``."""
    h, w = 64, 96
    a, b = torch.rand(1, 3, h, w), torch.rand(1, 3, h, w)
    T = torch.eye(4)[None].clone()
    T[0, 0, 3] = 0.5
    K = _K(1, h, w)
    with torch.no_grad():
        return a, b, T, K, net(a, b, T, K)


def test_fine_matching_reports_the_image_costs_lowest_depth():
    from mfdepth.models.cost_volume import finish_cost_volume, pooled_cost_volume

    net = _small_multi(fine_matching=True).eval()
    a, b, T, K, out = _sideways_pair_through(net)
    cost, valid = pooled_cost_volume(a, b, T, K, net.depth_bins(1), 4)
    _, expected, reliable = finish_cost_volume(cost, valid, net.depth_bins(1))
    assert torch.equal(out["cost_volume_depth"], expected)
    assert torch.equal(out["cost_volume_valid"], reliable)
    assert net.reduce[0].in_channels == 64 + 2 * net.num_depth_bins


def test_fine_matching_at_half_resolution_matches_the_pooled_images():
    """``fine_matching_downsample=2``: the images are matched at 1/2 resolution (intrinsics scaled with
    them), each 1/4 cell's cost the mean over its 2x2 half-resolution pixels."""
    import torch.nn.functional as F

    from mfdepth.geometry import scale_intrinsics
    from mfdepth.models.cost_volume import finish_cost_volume, pooled_cost_volume

    net = _small_multi(fine_matching=True, fine_matching_downsample=2).eval()
    a, b, T, K, out = _sideways_pair_through(net)
    depths = net.depth_bins(1)
    cost, valid = pooled_cost_volume(F.avg_pool2d(a, 2), F.avg_pool2d(b, 2), T, scale_intrinsics(K, 0.5, 0.5),
                                     depths, 2)
    _, expected, reliable = finish_cost_volume(cost, valid, depths)
    assert torch.equal(out["cost_volume_depth"], expected)
    assert torch.equal(out["cost_volume_valid"], reliable)
    full = _small_multi(fine_matching=True).eval()
    with torch.no_grad():
        assert not torch.equal(full(a, b, T, K)["cost_volume_depth"], expected)  # a different cost
    with pytest.raises(ValueError, match="fine_matching_downsample"):
        _small_multi(fine_matching=True, fine_matching_downsample=3)


@pytest.mark.parametrize("fine_matching", [False, True])
def test_multi_started_from_single_predicts_what_single_does(fine_matching):
    torch.manual_seed(1)
    single = SingleFrameDepthNet(initial_depth=0.2)
    with torch.no_grad():  # a single-frame net that is not at its initial state
        for p in single.parameters():
            p.add_(0.05 * torch.randn_like(p))
    multi = _small_multi(fine_matching=fine_matching, msff=False)
    # Float64, so that "predicts what S does" is tested exactly: the perturbed net amplifies float32
    # rounding, whose size depends on the CPU's kernels (one pixel in 4608 was 4e-3 off on one host).
    single.double(), multi.double()
    h, w = 64, 96
    target, source = (torch.rand(3, 3, h, w, dtype=torch.float64) for _ in range(2))
    T = torch.eye(4, dtype=torch.float64).expand(3, 4, 4).clone()
    T[:, 2, 3] = -0.5
    K = _K(3, h, w).double()
    single.train(), multi.train()
    statistics_before = single.encoder.bn1.running_mean.clone()
    multi.start_from_single(single, target)
    assert torch.equal(multi.encoder.bn1.running_mean, statistics_before)  # the calibration pass moved nothing
    # The cost volume (nonzero: the frames differ) is not read: in eval mode the prediction is S's...
    single.eval(), multi.eval()
    with torch.no_grad():
        for d_multi, d_single in zip(multi(target, source, T, K)["disp"], single(target)["disp"]):
            torch.testing.assert_close(d_multi, d_single, rtol=0, atol=1e-5)
    # ... and in train mode too, up to the batch statistics: M's encoder normalises over both frames.
    single.train(), multi.train()
    with torch.no_grad():
        nearby = (target + 0.01 * torch.randn_like(target)).clamp(0, 1)  # a next frame: similar statistics
        ratio = multi(target, nearby, T, K)["depth"][0] / single(target)["depth"][0]
    assert (ratio - 1).abs().median() < 0.01
    # A gradient reaches the weights that read the cost volume.
    multi(target, source, T, K)["depth"][0].mean().backward()
    assert multi.reduce[0].weight.grad[:, 64:].abs().sum() > 0


def test_lowest_cost_hint_places_the_depth_in_the_hypothesis_range():
    multi = _small_multi(cost_hint=True)
    multi.d_min.fill_(2.0), multi.d_max.fill_(32.0)
    depth = torch.tensor([2.0, 8.0, 32.0, 8.0]).reshape(1, 1, 2, 2)
    reliable = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    hint = multi.lowest_cost_hint(depth, reliable)
    torch.testing.assert_close(hint[0, 0].flatten(), torch.tensor([0.0, 0.5, 1.0, 0.0]))  # log-spaced: 8 m is half-way
    torch.testing.assert_close(hint[0, 1], reliable[0, 0])
    # A zeroed cost volume leaves nothing to hint at.
    h, w = 64, 96
    a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    T = torch.eye(4).expand(2, 4, 4).clone()
    T[:, 2, 3] = -1.0
    with torch.no_grad():
        zeroed = multi.eval()(a, b, T, _K(2, h, w), zero_cost_volume=torch.tensor([True, True]))
        other = multi(a, torch.rand(2, 3, h, w), T, _K(2, h, w), zero_cost_volume=torch.tensor([True, True]))
    torch.testing.assert_close(zeroed["depth"][0], other["depth"][0])


@pytest.mark.parametrize("num_layers, builder", [(18, torchvision.models.resnet18), (50, torchvision.models.resnet50)])
def test_scaled_trunk_at_width_one_is_torchvisions_resnet(num_layers, builder):
    from mfdepth.models.layers import scaled_resnet_trunk

    torch.manual_seed(0)
    reference = builder(weights=None).eval()
    ours = scaled_resnet_trunk(num_layers, 1.0).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
    ours.load_state_dict(state)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = reference.layer4(reference.layer3(reference.layer2(reference.layer1(
            reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))))
        got = ours.layer4(ours.layer3(ours.layer2(ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))))))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("num_layers, channels", [(18, [32, 32, 64, 128, 256]), (50, [32, 128, 256, 512, 1024])])
def test_half_width_encoder_has_half_the_channels(num_layers, channels):
    encoder = ResnetEncoder(num_layers, 1, width=0.5)
    assert encoder.num_ch_enc == channels
    features = encoder(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(2, c, 64 >> (s + 1), 96 >> (s + 1)) for s, c in enumerate(channels)]
    full = ResnetEncoder(num_layers, 1)
    assert sum(p.numel() for p in encoder.parameters()) < 0.3 * sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="full-width"):
        ResnetEncoder(num_layers, 1, weights_path="resnet.pth", width=0.5)


def test_half_width_networks_train_end_to_end():
    h, w = 64, 96
    torch.manual_seed(0)
    single = SingleFrameDepthNet(encoder_width=0.5)
    multi = MultiFrameDepthNet(num_depth_bins=8, fine_matching=True, encoder_width=0.5)
    pose = PoseNet(encoder_width=0.5)
    a, b = torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)
    T = pose(a, b, source_is_before=True)
    out = multi(a, b, T, _K(2, h, w))
    assert [tuple(d.shape) for d in out["depth"]] == [(2, 1, h >> s, w >> s) for s in range(4)]
    loss = sum(d.mean() for d in out["depth"] + single(a)["depth"]) + T[:, :3, 3].abs().sum()
    loss.backward()
    for net in (single, multi, pose):
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing[:5]
