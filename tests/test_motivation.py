"""The motivation side of every script against values computed by hand or by plain loops: the distillation errors and
the intrinsic reward, RND's input and running mean, the masked predictor loss, the SND target losses (SND-V's
contrastive loss with its augmentation and pairs, SND-STD's ST-DIM, SND-VIC's VICReg), the rollout's errors scored in
batched passes after it, the fast layout and optimizer, and each script's `motivation_loss`, which trains the
predictor on the frames the rewards score, s_{t+1}.

The authors' code this follows is github.com/Iskandor/SND: RNDModelAtari.error and .loss_function,
RunningStatsSimple, SNDVModelAtari.error, SNDVEncoderAtari.loss_function and .augment, ST_DIMEncoderAtari.
loss_function_crossentropy, STDModelAtari.error, VICRegEncoderAtari.loss_function (arXiv 2302.11563 describes them)."""

import copy
import math

import pytest
import torch
import torch.nn as nn
from conftest import (
    PROCGEN,
    PROCGEN_METHODS,
    RND,
    SCRIPTS,
    SND_ATARI,
    SND_STD,
    SND_V,
    SND_VIC,
    load_script,
    short,
    tiny_args,
)

# A case is (script, method): an Atari script with a motivation model with method None, or the procgen script with one
# of its four methods
MOTIVATION_ATARI = (RND, *SND_ATARI)
CASES = [pytest.param((script, None), id=short(script)) for script in MOTIVATION_ATARI] + [
    pytest.param((PROCGEN, method), id=f"procgen-{method}") for method in PROCGEN_METHODS
]
KIND = {RND: "rnd", SND_V: "snd-v", SND_STD: "snd-std", SND_VIC: "snd-vic"}


def kind_of(case) -> str:
    script, method = case
    return method or KIND[script]


def cases_of(*kinds) -> list:
    return [case for case in CASES if kind_of(case.values[0]) in kinds]


def error_of(case):
    """The case's distillation_error(target_features, predicted_features)."""
    script, method = case
    module = load_script(script)
    return (lambda t, p: module.distillation_error(t, p, method)) if method else module.distillation_error


def frame_shape(case) -> tuple:
    return (3, 64, 64) if case[0] == PROCGEN else (96, 96)


def model_input(case, model, frames: torch.Tensor, frame_mean=None) -> torch.Tensor:
    """The motivation model's input from uint8 frames, built the script's way; RND subtracts `frame_mean` (by default the
    model's running mean)."""
    script = case[0]
    module = load_script(script)
    is_rnd = kind_of(case) == "rnd"
    if is_rnd and frame_mean is None:
        frame_mean = model.frame_mean.mean
    if script == PROCGEN:
        return module.motivation_input(frames, frame_mean if is_rnd else None)
    return module.rnd_input(frames, frame_mean) if is_rnd else module.snd_input(frames)


@pytest.fixture(scope="module")
def models():
    """One freshly built motivation model per case; tests that change one use a deep copy."""
    built = {}
    for i, case in enumerate(CASES):
        script, method = case.values[0]
        torch.manual_seed(10 + i)
        module = load_script(script)
        if method:
            built[script, method] = module.MOTIVATION_MODELS[method]()
        else:
            built[script, method] = module.RNDModel() if script == RND else module.SNDModel()
    return built


# ---------------------------------------------------------------------------------------------------- error and reward

TARGET = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]]
PREDICTED = [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [3.0, -1.0, 2.0]]
EPS = 1e-8
EXPECTED_ERROR = {
    "rnd": [0.5 * (1 + 4), 0.5 * 1, 0.0],  # 1/2 sum_k (T_k - P_k)^2
    "snd-v": [5 / 3, 1 / 3, 0.0],  # mean_k (T_k - P_k)^2, exactly 0 for equal features
    # mean_k (|T_k - P_k| + 1e-8)^2: T - P = +1 and -1 both give (1 + 1e-8)^2, equal features 1e-16
    "snd-std": [((1 + EPS) ** 2 + (2 + EPS) ** 2 + EPS**2) / 3, (EPS**2 + (1 + EPS) ** 2 + EPS**2) / 3, EPS**2],
}
EXPECTED_ERROR["snd-vic"] = EXPECTED_ERROR["snd-std"]


@pytest.mark.parametrize("case", CASES)
def test_distillation_error_by_hand(case):
    target, predicted = torch.tensor(TARGET, dtype=torch.float64), torch.tensor(PREDICTED, dtype=torch.float64)
    error = error_of(case)(target, predicted)
    torch.testing.assert_close(error, torch.tensor(EXPECTED_ERROR[kind_of(case)], dtype=torch.float64), rtol=1e-13, atol=0)
    # the 512 features of the scripts: a difference of 0.5 on each
    features = torch.randn(2, 512)
    expected = {"rnd": 0.5 * 512 * 0.25, "snd-v": 0.25, "snd-std": (0.5 + EPS) ** 2, "snd-vic": (0.5 + EPS) ** 2}
    torch.testing.assert_close(error_of(case)(features, features + 0.5), torch.full((2,), expected[kind_of(case)]))


@pytest.mark.parametrize("script", SCRIPTS, ids=short)
def test_intrinsic_reward_scales_by_eta_and_clips_to_the_unit_interval(script):
    module = load_script(script)
    error = torch.tensor([2.5, 0.5, 0.0, 1.2, -0.5])
    torch.testing.assert_close(module.intrinsic_reward(error, eta=0.3), torch.tensor([0.75, 0.15, 0.0, 0.36, 0.0]))
    torch.testing.assert_close(module.intrinsic_reward(error, eta=1.0), torch.tensor([1.0, 0.5, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(module.intrinsic_reward(error, eta=0.0), torch.zeros(5))


@pytest.mark.parametrize("script", SCRIPTS, ids=short)
def test_target_feature_spread_is_the_mean_feature_std(script):
    features = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # unbiased stds 2 and 0
    torch.testing.assert_close(load_script(script).target_feature_spread(features), torch.tensor(1.0))


@pytest.mark.parametrize("script", SCRIPTS, ids=short)
def test_effective_rank_counts_the_directions_the_features_spread_over(script):
    """exp of the entropy of the normalised eigenvalues of the features' covariance: 7 for 7 uncorrelated features of
    equal variance (Hadamard columns), whatever their scale; 1 for features on a line or not varying; two uncorrelated
    features of variances 1 : 3 give exp(-(1/4 ln 1/4 + 3/4 ln 3/4)) = 1.7548."""
    effective_rank = load_script(script).effective_rank
    z = hadamard8()[:, 1:]
    torch.testing.assert_close(effective_rank(z), torch.tensor(7.0))
    torch.testing.assert_close(effective_rank(100 * z), torch.tensor(7.0))
    line = torch.arange(8.0)[:, None] * torch.randn(1, 5)
    torch.testing.assert_close(effective_rank(line), torch.tensor(1.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(effective_rank(torch.full((8, 5), 3.0)), torch.tensor(1.0))
    two = torch.stack([z[:, 0], math.sqrt(3) * z[:, 1]], 1)
    expected = math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    torch.testing.assert_close(effective_rank(two), torch.tensor(expected))


# ---------------------------------------------------------------------------------------------------- RND's input


def test_rnd_input_subtracts_the_running_mean_without_a_std(rnd):
    frames = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    mean = torch.tensor([[51.0, 51.0], [51.0, 51.0]], dtype=torch.float64)
    x = rnd.rnd_input(frames, mean)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([[[[-0.2, 0.8], [0.0, 0.2]]]]))
    # (T, N, H, W) frames with one mean per step, (T, 1, H, W): each step's frames minus its own mean
    steps = torch.stack([frames.expand(2, 2, 2), 255 - frames.expand(2, 2, 2)])
    means = torch.stack([mean, 2 * mean])[:, None]
    x = rnd.rnd_input(steps, means)
    assert x.shape == (2, 2, 1, 2, 2)
    torch.testing.assert_close(x[1, 0, 0], (255.0 - frames[0].float() - 102.0) / 255.0)


def test_procgen_input_is_raw_pixels_or_minus_the_running_mean(procgen):
    frames = torch.tensor([[[[0, 255], [51, 102]]] * 3, [[[255, 0], [153, 204]]] * 3], dtype=torch.uint8)  # (2, 3, 2, 2)
    raw = procgen.motivation_input(frames, None)
    assert raw.dtype == torch.float32 and raw.shape == (2, 3, 2, 2)
    torch.testing.assert_close(raw, frames.float() / 255.0)
    mean = torch.full((3, 2, 2), 51.0, dtype=torch.float64)
    centred = procgen.motivation_input(frames, mean)
    assert centred.dtype == torch.float32
    torch.testing.assert_close(centred[:, 0, 0, 0], torch.tensor([-51.0, 204.0]) / 255.0)


# ---------------------------------------------------------------------------------------------------- masked_mse

MASKED = [pytest.param(script, id=short(script)) for script in (RND, SND_V, PROCGEN)]


@pytest.mark.parametrize("script", MASKED)
def test_masked_mse_keeps_the_elements_drawn_below_the_proportion(script, monkeypatch):
    module = load_script(script)
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    draws = torch.tensor([[0.10, 0.50], [0.20, 0.90]])  # kept: 0.10 and 0.20 (< 0.25)
    monkeypatch.setattr(torch, "rand_like", lambda t: draws)
    torch.testing.assert_close(module.masked_mse(predicted, target, keep_proportion=0.25), torch.tensor(5.0))  # (1 + 9) / 2
    torch.testing.assert_close(module.masked_mse(predicted, target, keep_proportion=1.0), torch.tensor(7.5))  # 30 / 4
    monkeypatch.setattr(torch, "rand_like", lambda t: torch.full_like(t, 0.5))
    assert module.masked_mse(predicted, target, keep_proportion=0.25).item() == 0.0  # nothing kept: 0, not nan


@pytest.mark.parametrize("script", MASKED)
def test_masked_mse_keeps_a_quarter_and_does_not_train_the_target(script):
    """The kept proportion, read off the gradient (non-zero exactly on the kept elements), is 25%."""
    module = load_script(script)
    torch.manual_seed(0)
    predicted = torch.zeros(512, 512, requires_grad=True)
    target = torch.ones(512, 512, requires_grad=True)
    module.masked_mse(predicted, target, keep_proportion=0.25).backward()
    kept = predicted.grad != 0
    assert kept.float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert target.grad is None
    torch.testing.assert_close(predicted.grad[kept], torch.full((int(kept.sum()),), -2.0 / kept.sum().item()))


# ---------------------------------------------------------------------------------------------------- RunningMean

RUNNING_MEAN = [pytest.param((RND, None), id="rnd"), pytest.param((PROCGEN, "rnd"), id="procgen-rnd")]


def running_mean_by_loop(mean: torch.Tensor, count: int, frames: torch.Tensor) -> tuple:
    """The one-step rule, step by step: each step's batch mean is one more sample. Returns (means after each step,
    the final count)."""
    means = []
    for step_frames in frames:
        count += 1
        mean = mean + (step_frames.double().mean(0) - mean) / count
        means.append(mean)
    return torch.stack(means), count


@pytest.mark.parametrize("case", RUNNING_MEAN)
def test_running_mean_starts_as_one_sample_of_zero(case):
    module = load_script(case[0])
    running = module.RunningMean((2,))
    assert isinstance(running, nn.Module)
    assert running.mean.dtype == torch.float64 and torch.equal(running.mean, torch.zeros(2, dtype=torch.float64))
    assert running.count.item() == 1
    assert set(dict(running.named_buffers())) == {"mean", "count"}
    # two vector steps of 2 envs: batch means (3, 6) and (9, 0); after each: (0 + (3, 6)) / 2, (0 + (3, 6) + (9, 0)) / 3
    step_means = running.update(torch.tensor([[[2, 4], [4, 8]], [[9, 0], [9, 0]]], dtype=torch.uint8))
    expected = torch.tensor([[1.5, 3.0], [4.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(step_means, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(running.mean, expected[-1], rtol=0, atol=1e-15)
    assert running.count.item() == 3


@pytest.mark.parametrize("case", RUNNING_MEAN)
def test_running_mean_in_bulk_equals_one_update_per_step(case):
    module = load_script(case[0])
    shape = (4, 4) if case[0] == RND else (3, 4, 4)
    torch.manual_seed(0)
    running = module.RunningMean(shape)
    running.update(torch.randint(0, 256, (2, 3) + shape, dtype=torch.uint8))  # a start that is not the initial zero
    mean, count = running.mean.clone(), running.count.item()
    frames = torch.randint(0, 256, (5, 3) + shape, dtype=torch.uint8)
    expected, final_count = running_mean_by_loop(mean, count, frames)
    step_means = running.update(frames)
    assert step_means.dtype == torch.float64 and step_means.shape == (5,) + shape
    torch.testing.assert_close(step_means, expected, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(running.mean, expected[-1], rtol=1e-13, atol=1e-12)
    assert running.count.item() == final_count == 3 + 5


@pytest.mark.parametrize("case", RUNNING_MEAN)
def test_rnd_model_keeps_its_running_mean_in_its_state_dict(models, case):
    """`motivation.frame_mean` of the newest frame's shape; its mean and count are buffers of the model, so a checkpoint
    of the model's state_dict saves them and loading it restores them."""
    module = load_script(case[0])
    model = copy.deepcopy(models[case])
    shape = (96, 96) if case[0] == RND else (3, 64, 64)
    assert isinstance(model.frame_mean, module.RunningMean) and model.frame_mean.mean.shape == shape
    model.frame_mean.update(torch.randint(0, 256, (3, 2) + shape, dtype=torch.uint8))
    state = model.state_dict()
    assert state["frame_mean.mean"].dtype == torch.float64 and state["frame_mean.count"].item() == 4
    fresh = copy.deepcopy(models[case])
    assert not torch.equal(fresh.frame_mean.mean, model.frame_mean.mean)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.frame_mean.mean, model.frame_mean.mean) and fresh.frame_mean.count.item() == 4
    fast = fresh.to(torch.device("cpu"), memory_format=torch.channels_last)  # as the scripts place the model
    assert fast.frame_mean.mean.dtype == torch.float64


# ---------------------------------------------------------------------------------------------------- SND-V's contrastive loss

CONTRASTIVE = [pytest.param(script, id=short(script)) for script in (SND_V, PROCGEN)]


@pytest.mark.parametrize("script", CONTRASTIVE)
def test_contrastive_loss_by_hand(script):
    """d is the mean (not the sum) over features of (z - z')^2, similarity the mean over pairs of (y - d)^2, and the
    magnitude hinge is 0 for small features, so the total is the similarity alone."""
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    z_other = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0])
    # d = (0, 1, 4/3, 10/3); (y - d)^2 = (0, 0, 1/9, 100/9) -> similarity = (101 / 9) / 4 = 101/36
    # mean z^2 = 27/12, mean z'^2 = 18/12: 3.75 - 200 < 0 -> 0
    total, terms = load_script(script).contrastive_loss(z, z_other, labels)
    assert set(terms) == {"similarity", "magnitude"}
    torch.testing.assert_close(terms["similarity"], torch.tensor(101 / 36))
    assert terms["magnitude"].item() == 0.0
    torch.testing.assert_close(total, torch.tensor(101 / 36))


@pytest.mark.parametrize("script", CONTRASTIVE)
@pytest.mark.parametrize(
    "square, other_square, magnitude",
    [
        (99.5, 99.5, 0.0),  # M = 199: below the 200 threshold -> exactly 0
        (100.5, 100.5, 1.0),  # M = 201 -> the excess, 1 (a hinge on the mean of both sides, 100.5, would give 0)
        (150.0, 60.0, 10.0),  # M = 150 + 60 = 210: the two sides' means are added
    ],
)
def test_contrastive_magnitude_hinge_at_200(script, square, other_square, magnitude):
    """L_mag = max(0, mean(z^2) + mean(z'^2) - 200) with constant features; the similarity is computed by hand."""
    z = torch.full((4, 3), math.sqrt(square))
    z_other = torch.full((4, 3), math.sqrt(other_square))
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0])
    total, terms = load_script(script).contrastive_loss(z, z_other, labels)
    torch.testing.assert_close(terms["magnitude"], torch.tensor(magnitude), rtol=0, atol=2e-4)
    distance = (math.sqrt(square) - math.sqrt(other_square)) ** 2  # the same on every feature
    similarity = (distance**2 + 3 * (1 - distance) ** 2) / 4
    torch.testing.assert_close(terms["similarity"], torch.tensor(similarity), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(total, torch.tensor(similarity + magnitude), rtol=1e-5, atol=2e-4)


@pytest.mark.parametrize("script", CONTRASTIVE)
def test_contrastive_magnitude_hinge_passes_no_gradient_below_200(script):
    """With z = z' and label 0 the similarity and its gradient are 0, so the gradient is the hinge's: exactly 0 at
    M = 199, and d(mean z^2)/dz = 2z / 12 on each side at M = 201."""
    gradients = {}
    for square in (99.5, 100.5):
        z = torch.full((4, 3), math.sqrt(square), requires_grad=True)
        z_other = torch.full((4, 3), math.sqrt(square), requires_grad=True)
        total, _ = load_script(script).contrastive_loss(z, z_other, torch.zeros(4))
        total.backward()
        gradients[square] = (z.grad, z_other.grad)
    assert all(torch.all(g == 0) for g in gradients[99.5])
    for g in gradients[100.5]:
        torch.testing.assert_close(g, torch.full((4, 3), 2 * math.sqrt(100.5) / 12))


# ---------------------------------------------------------------------------------------------------- SND-VIC's VICReg

VICREG = [pytest.param(script, id=short(script)) for script in (SND_VIC, PROCGEN)]


def hadamard8() -> torch.Tensor:
    """The 8 x 8 Sylvester Hadamard matrix: +-1 entries, orthogonal columns, columns 1..7 sum to zero."""
    h = torch.ones(1, 1)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("script", VICREG)
def test_vicreg_loss_by_hand(script):
    """Invariance, unbiased variance hinge with eps 1e-4, off-diagonal covariance / D, and total = inv + var + cov / 25."""
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 2.0, 0.0], [3.0, 3.0, 0.0]])
    z_next = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])
    # z - z' = [[-1,0,-1],[1,0,-1],[1,2,1],[3,2,1]]: squares sum to 2 + 2 + 6 + 14 = 24 -> invariance 24 / 12 = 2
    invariance = 2.0
    # z: columns 0 and 1 are (0,1,2,3), Var 5/3, std > 1 -> 0; column 2 constant: 1 - sqrt(1e-4) = 0.99 -> 0.99 / 3
    # z': columns 0 and 1 have Var 1/3 -> 1 - sqrt(1/3 + 1e-4) each; column 2 (1,1,-1,-1) has Var 4/3 -> 0
    variance = 0.99 / 3 + 2 * (1 - math.sqrt(1 / 3 + 1e-4)) / 3
    # z: C01 = C10 = 5/3, the rest 0 -> (2 * 25/9) / 3 = 50/27; z': C01 = C10 = -1/3, C02 = C12 = 0 -> (2 / 9) / 3
    covariance = 50 / 27 + 2 / 27
    total, terms = load_script(script).vicreg_loss(z, z_next)
    assert set(terms) == {"invariance", "variance", "covariance"}
    torch.testing.assert_close(terms["invariance"], torch.tensor(invariance))
    torch.testing.assert_close(terms["variance"], torch.tensor(variance))
    torch.testing.assert_close(terms["covariance"], torch.tensor(covariance))
    torch.testing.assert_close(total, torch.tensor(invariance + variance + covariance / 25))


@pytest.mark.parametrize("script", VICREG)
def test_vicreg_collapsed_features_pay_0_99_per_view(script):
    """Constant features: std = sqrt(0 + 1e-4) = 0.01 on every feature, so each view pays 0.99 (not 1: the epsilon),
    and no covariance; the invariance is (3 - (-1))^2 = 16."""
    total, terms = load_script(script).vicreg_loss(torch.full((8, 5), 3.0), torch.full((8, 5), -1.0))
    torch.testing.assert_close(terms["variance"], torch.tensor(2 * 0.99))
    assert terms["covariance"].item() == 0.0
    torch.testing.assert_close(terms["invariance"], torch.tensor(16.0))
    torch.testing.assert_close(total, torch.tensor(17.98))


@pytest.mark.parametrize("script", VICREG)
def test_vicreg_identical_views_have_zero_invariance(script):
    torch.manual_seed(0)
    z = torch.randn(16, 8)
    _, terms = load_script(script).vicreg_loss(z, z.clone())
    assert terms["invariance"].item() == 0.0
    _, shifted = load_script(script).vicreg_loss(z, z + 0.5)  # the same views half a unit apart: 0.5^2
    torch.testing.assert_close(shifted["invariance"], torch.tensor(0.25))


@pytest.mark.parametrize("script", VICREG)
def test_vicreg_decorrelated_unit_variance_features_cost_nothing(script):
    """Hadamard columns 1..7 scaled by sqrt(7/8): unbiased Var exactly 1, sample covariance exactly 0, so covariance ~0
    and variance 0 (std sqrt(1 + 1e-4) > 1); at a quarter of the scale each feature and view pays 1 - sqrt(Var + 1e-4)."""
    z = hadamard8()[:, 1:] * math.sqrt(7 / 8)
    torch.testing.assert_close(z.var(0), torch.ones(7))  # the premise
    total, terms = load_script(script).vicreg_loss(z, z)
    assert abs(terms["covariance"].item()) < 1e-10
    assert terms["variance"].item() == 0.0
    assert abs(total.item()) < 1e-10
    _, quarter = load_script(script).vicreg_loss(z / 4, z / 4)
    torch.testing.assert_close(quarter["variance"], torch.tensor(2 * (1 - math.sqrt(1 / 16 + 1e-4))))
    # two equal columns x = (0, 1, 2, 3): C01 = C10 = 5/3 -> 2 * 25/9 / D(=2) per view; (x, -x) has the same square
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    _, correlated = load_script(script).vicreg_loss(torch.stack([x, x], 1), torch.stack([x, -x], 1))
    torch.testing.assert_close(correlated["covariance"], torch.tensor(50 / 9))


# ---------------------------------------------------------------------------------------------------- SND-STD's ST-DIM

ST_DIM = [pytest.param(script, id=short(script)) for script in (SND_STD, PROCGEN)]


def st_dim_by_loops(next_global_scores, next_local_scores, local_features, target_features) -> dict:
    """ST-DIM in plain Python: for every position p and current state j, the logits over next states i, a stable
    log-sum-exp minus the logit of i = j; Frobenius norms of each p's N x N matrix; the unbiased std per sample."""
    n, num_positions, _ = local_features.shape

    def logit(score, i, j, p):
        return sum(float(a) * float(b) for a, b in zip(score(i, p), local_features[j, p]))

    def infonce(score):
        total = 0.0
        for p in range(num_positions):
            for j in range(n):
                logits = [logit(score, i, j, p) for i in range(n)]
                top = max(logits)
                total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[j]
        return total / (num_positions * n)

    def mean_norm(score):
        norms = [math.sqrt(sum(logit(score, i, j, p) ** 2 for i in range(n) for j in range(n))) for p in range(num_positions)]
        return sum(norms) / num_positions

    def global_score(i, p):
        return next_global_scores[i]

    def local_score(i, p):
        return next_local_scores[i, p]

    stds = []
    for row in target_features.tolist():
        mean = sum(row) / len(row)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1)))
    return {
        "global_local_infonce": infonce(global_score),
        "local_local_infonce": infonce(local_score),
        "logit_norm": mean_norm(global_score) + mean_norm(local_score),
        "feature_std": -sum(stds) / len(stds),
    }


@pytest.mark.parametrize("script", ST_DIM)
def test_st_dim_loss_by_hand(script):
    """N = 2 states, P = 2 positions (the second all zeros), d = 2: the softmax runs over the next states i (a column
    of logits[p]), the correct one is i = j, and everything is averaged over p and j."""
    next_global_scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # g_0, g_1
    local_features = torch.zeros(2, 2, 2)
    local_features[0, 0] = torch.tensor([2.0, 0.0])  # l_0 at p = 0
    local_features[1, 0] = torch.tensor([1.0, 1.0])  # l_1 at p = 0
    next_local_scores = torch.tensor([[[0.0, 1.0], [5.0, 5.0]], [[1.0, -1.0], [-3.0, 2.0]]])  # s_i at p = 0, 1
    target_features = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # logits1[0] (rows i, columns j): <g_0, l_0> = 2, <g_0, l_1> = 1, <g_1, l_0> = 0, <g_1, l_1> = 1; logits1[1] = 0
    # j = 0: column (2, 0), answer i = 0 -> log(e^2 + e^0) - 2; j = 1: column (1, 1) -> log 2; p = 1: log 2 twice
    global_local = (math.log(math.exp(2) + 1) - 2 + 3 * math.log(2)) / 4
    # logits2[0]: <s_0, l_0> = 0, <s_0, l_1> = 1, <s_1, l_0> = 2, <s_1, l_1> = 0; logits2[1] = 0
    # j = 0: column (0, 2), answer 0 -> log(1 + e^2); j = 1: column (1, 0), answer 1 -> log(e + 1); p = 1: log 2 twice
    local_local = (math.log(1 + math.exp(2)) + math.log(math.e + 1) + 2 * math.log(2)) / 4
    # ||logits1[0]||_F = sqrt(4 + 1 + 0 + 1), ||logits2[0]||_F = sqrt(0 + 1 + 4 + 0), both 0 at p = 1: mean over p
    logit_norm = math.sqrt(6) / 2 + math.sqrt(5) / 2
    # sample 0: mean 2, deviations (-1, 0, 1) -> std 1; sample 1: mean 2, (-2, -2, 4) -> sqrt(24 / 2)
    feature_std = -(1 + math.sqrt(12)) / 2
    total, terms = load_script(script).st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    assert set(terms) == {"global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"}
    torch.testing.assert_close(terms["global_local_infonce"], torch.tensor(global_local))
    torch.testing.assert_close(terms["local_local_infonce"], torch.tensor(local_local))
    torch.testing.assert_close(terms["logit_norm"], torch.tensor(logit_norm))
    torch.testing.assert_close(terms["feature_std"], torch.tensor(feature_std))
    torch.testing.assert_close(total, torch.tensor(global_local + local_local + 1e-4 * (logit_norm + feature_std)))


@pytest.mark.parametrize("script", ST_DIM)
def test_st_dim_loss_matches_a_plain_loop_on_random_tensors(script):
    torch.manual_seed(0)
    n, num_positions, depth = 5, 3, 4
    next_global_scores = torch.randn(n, depth, dtype=torch.float64)
    next_local_scores = torch.randn(n, num_positions, depth, dtype=torch.float64)
    local_features = torch.randn(n, num_positions, depth, dtype=torch.float64)
    target_features = torch.randn(n, 7, dtype=torch.float64)
    total, terms = load_script(script).st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    expected = st_dim_by_loops(next_global_scores, next_local_scores, local_features, target_features)
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, rel=1e-10), key
    expected_total = sum(expected[k] for k in ("global_local_infonce", "local_local_infonce"))
    expected_total += 1e-4 * (expected["logit_norm"] + expected["feature_std"])
    assert total.item() == pytest.approx(expected_total, rel=1e-10)


@pytest.mark.parametrize("script", ST_DIM)
def test_st_dim_loss_is_lower_for_aligned_next_states_than_shuffled_ones(script):
    """Next-state scores built to match each state's own local features score a much lower InfoNCE than the same
    batch with the next states deranged (state j paired with the next state of j - 1)."""
    st_dim_loss = load_script(script).st_dim_loss
    torch.manual_seed(0)
    n, num_positions, depth = 16, 4, 8
    local_features = torch.randn(n, num_positions, depth)
    next_local_scores = local_features * 5
    next_global_scores = local_features.sum(1) * 3
    target_features = torch.randn(n, 32)
    derangement = torch.roll(torch.arange(n), 1)
    aligned_total, aligned = st_dim_loss(next_global_scores, next_local_scores, local_features, target_features)
    shuffled_total, shuffled = st_dim_loss(
        next_global_scores[derangement], next_local_scores[derangement], local_features, target_features
    )
    assert aligned["local_local_infonce"] < 0.1 * shuffled["local_local_infonce"]
    assert aligned["global_local_infonce"] < 0.5 * shuffled["global_local_infonce"]
    assert aligned_total < shuffled_total
    # a permutation of the next states does not change the logits' norms or the feature spread
    torch.testing.assert_close(aligned["logit_norm"], shuffled["logit_norm"])
    torch.testing.assert_close(aligned["feature_std"], shuffled["feature_std"])


# ---------------------------------------------------------------------------------------------------- SND-V's augment

AUGMENT = [pytest.param((SND_V, (1, 96, 96)), id="snd_v-96px"), pytest.param((PROCGEN, (3, 64, 64)), id="procgen-64px")]


def tile_sizes(side: int) -> tuple:
    return (1, 2, 4, 8, 12, 16) if side == 96 else (1, 2, 4, 8, 16)


def tile_size_of(zeroed: torch.Tensor, sizes: tuple):
    """The largest of `sizes` such that the (N, H, W) bool map is constant on every aligned t x t tile (its t x t
    averages are all 0 or 1); None when nothing is zeroed. For a random tile mask this is its tile size: a mask of
    8-tiles is constant on 4-tiles too, but (barring tiny odds) not on 16- or 12-tiles."""
    if not zeroed.any():
        return None
    zeroed = zeroed.float().unsqueeze(1)
    for t in sorted(sizes, reverse=True):
        if zeroed.shape[2] % t == 0:
            averages = nn.functional.avg_pool2d(zeroed, t)
            if torch.all((averages == 0) | (averages == 1)):
                return t


@pytest.fixture(scope="module", params=AUGMENT)
def augment_stats(request):
    """72 calls of augment on (32, C, side, side) ones: a pixel below 0.5 was zeroed by the mask (ones become 1 +- 0.2,
    zeros +- 0.2); what remains after subtracting 0 or 1 is the noise, exactly 0 on samples left without noise."""
    script, shape = request.param
    augment, sizes = load_script(script).augment, tile_sizes(shape[-1])
    torch.manual_seed(0)
    ones = torch.ones((32,) + shape)
    stats = {"side": shape[-1], "sizes": [], "masked": [], "noised": [], "zero_tiles": {t: [0, 0, 0] for t in sizes}}
    stats["same_in_every_channel"] = True
    noise_values = []
    out_min, out_max = 1.0, 1.0
    for _ in range(72):
        out = augment(ones)
        assert out.shape == ones.shape and out.dtype == ones.dtype
        zeroed_all = out < 0.5
        stats["same_in_every_channel"] &= bool((zeroed_all == zeroed_all[:, :1]).all())
        zeroed = zeroed_all[:, 0]
        noise = out[:, 0] - (~zeroed).float()
        t = tile_size_of(zeroed, sizes)
        stats["sizes"].append(t)
        masked = zeroed.flatten(1).any(1)
        noised = (noise != 0).flatten(1).any(1)
        stats["masked"].append(masked)
        stats["noised"].append(noised)
        if t is not None:
            counts = stats["zero_tiles"][t]
            counts[0] += int(zeroed[masked].sum()) // (t * t)  # zeroed tiles among masked samples
            counts[1] += int(masked.sum()) * (shape[-1] // t) ** 2  # tiles of masked samples
            counts[2] += int(masked.sum())
        noise_values.append(noise[noised].flatten())
        out_min, out_max = min(out_min, float(out.min())), max(out_max, float(out.max()))
    noise = torch.cat(noise_values)
    stats["noise"] = dict(mean=noise.mean().item(), std=noise.std().item(), min=noise.min().item(), max=noise.max().item())
    stats["out_min"], stats["out_max"] = out_min, out_max
    return stats


def test_augment_draws_every_tile_size_and_zeroes_whole_aligned_tiles(augment_stats):
    """Each call's zero pattern is constant on the tiles of one size, and every size occurs (a pattern not aligned to a
    tile grid would only ever read as size 1); at 64 px the sizes are {1, 2, 4, 8, 16}: 12, which does not divide 64,
    is never drawn."""
    sizes = augment_stats["sizes"]
    assert None not in sizes
    assert set(sizes) == set(tile_sizes(augment_stats["side"]))
    assert (12 in sizes) == (augment_stats["side"] == 96)


def test_augment_zeroes_a_tenth_of_the_tiles_of_masked_samples(augment_stats):
    """Per tile size: zeroed tiles / tiles among masked samples is 0.1 within 4 binomial stds. A masked sample is only
    seen if at least one of its T tiles is zeroed, so the expectation is 0.1 / (1 - 0.9^T) (0.1022 for 36 tiles)."""
    for t, (zeroed, tiles, samples) in augment_stats["zero_tiles"].items():
        assert samples > 50, t
        per_sample = (augment_stats["side"] // t) ** 2
        expected = 0.1 / (1 - 0.9**per_sample)
        assert zeroed / tiles == pytest.approx(expected, abs=4 * math.sqrt(0.1 * 0.9 / tiles)), t


def test_augment_masks_and_noises_half_of_the_samples_independently(augment_stats):
    """Calls with tiles <= 8 (at least 64 tiles per sample, so a masked sample shows a zeroed tile but with odds
    0.9^64 = 1e-3): masked about 1/2, noised about 1/2, both about 1/4, each within 4 binomial stds."""
    keep = [t is not None and t <= 8 for t in augment_stats["sizes"]]
    masked = torch.cat([m for m, k in zip(augment_stats["masked"], keep) if k]).float()
    noised = torch.cat([m for m, k in zip(augment_stats["noised"], keep) if k]).float()
    n = masked.numel()
    assert n > 1000
    assert masked.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / n))
    assert noised.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / n))
    assert (masked * noised).mean().item() == pytest.approx(0.25, abs=4 * math.sqrt(0.25 * 0.75 / n))


def test_augment_noise_is_uniform_within_0_2_and_not_clipped(augment_stats):
    noise = augment_stats["noise"]
    assert -0.2 - 1e-6 <= noise["min"] < -0.199
    assert 0.199 < noise["max"] <= 0.2 + 1e-6
    assert noise["mean"] == pytest.approx(0.0, abs=2e-3)
    assert noise["std"] == pytest.approx(0.2 / math.sqrt(3), abs=2e-3)  # U(-0.2, 0.2): 0.1155
    assert augment_stats["out_max"] > 1.19 and augment_stats["out_min"] < -0.19  # no clipping to [0, 1]


def test_augment_zeroes_the_same_pixels_in_every_channel(augment_stats):
    assert augment_stats["same_in_every_channel"]


@pytest.mark.parametrize("script", CONTRASTIVE)
def test_augment_returns_a_new_tensor_and_leaves_the_input_alone(script):
    torch.manual_seed(2)
    frames = torch.rand(16, 3, 64, 64)
    before = frames.clone()
    out = load_script(script).augment(frames)
    assert torch.equal(frames, before)
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert not torch.equal(out, frames)


# ---------------------------------------------------------------------------------------------------- SND-V's pairs


@pytest.mark.parametrize("script", CONTRASTIVE)
def test_sample_pairs_label_0_repeats_the_state_and_label_1_draws_another(script):
    torch.manual_seed(0)
    num_states, num_pairs = 1_000_000, 20_000
    first, second, labels = load_script(script).sample_pairs(num_states, num_pairs, torch.device("cpu"))
    assert first.shape == second.shape == labels.shape == (num_pairs,)
    assert labels.is_floating_point() and torch.all((labels == 0) | (labels == 1))
    assert labels.mean().item() == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / num_pairs))
    same = labels == 0
    assert torch.equal(second[same], first[same])
    # label 1: an independent uniform draw, equal to the first by chance with odds 1e-6 each
    far_first, far_second = first[~same].double(), second[~same].double()
    n = far_first.numel()
    assert (far_first != far_second).float().mean().item() > 0.999
    assert abs(torch.corrcoef(torch.stack([far_first, far_second]))[0, 1].item()) < 4 / math.sqrt(n)
    # uniform on 0..num_states-1: mean (num_states - 1) / 2, std of the mean num_states / sqrt(12 n)
    assert far_second.mean().item() == pytest.approx((num_states - 1) / 2, abs=4 * num_states / math.sqrt(12 * n))


@pytest.mark.parametrize("script", CONTRASTIVE)
def test_sample_pairs_indices_cover_the_range_and_stay_in_it(script):
    torch.manual_seed(0)
    first, second, labels = load_script(script).sample_pairs(5, 2000, torch.device("cpu"))
    assert first.dtype == second.dtype == torch.long
    assert set(first.tolist()) == set(second.tolist()) == {0, 1, 2, 3, 4}
    assert set(second[labels == 1].tolist()) == {0, 1, 2, 3, 4}


# ---------------------------------------------------------------------------------------------------- the rollout's errors

NUM_STEPS, NUM_ENVS = 5, 3
# Frames per batched pass: all at once (the GPU's 4096); 2 steps a pass with a shorter last one; one step a pass (the
# CPU's 128 at 128 envs); 4 frames (RND and procgen round down to whole steps, 1; SND Atari passes cross step ends)
CHUNKS = [4096, 2 * NUM_ENVS, NUM_ENVS, 4]


@pytest.mark.parametrize("chunk_frames", CHUNKS)
@pytest.mark.parametrize("case", CASES)
def test_rollout_errors_equal_scoring_each_step_as_it_came(models, case, chunk_frames):
    """`rollout_distillation_errors` after the rollout equals scoring each step's frames alone, one step at a time; for
    RND with the running mean moved first by that step's frames (the one-step rule), from a mean that is not the
    initial zero, and left where the per-step updates leave it."""
    module, model = load_script(case[0]), copy.deepcopy(models[case])
    torch.manual_seed(4)
    shape = frame_shape(case)
    frames = torch.randint(0, 256, (NUM_STEPS, NUM_ENVS) + shape, dtype=torch.uint8)
    error = error_of(case)
    is_rnd = kind_of(case) == "rnd"
    expected = []
    with torch.no_grad():
        if is_rnd:
            model.frame_mean.update(torch.randint(0, 256, (2, NUM_ENVS) + shape, dtype=torch.uint8))
            step_means, count = running_mean_by_loop(model.frame_mean.mean.clone(), model.frame_mean.count.item(), frames)
        for step, step_frames in enumerate(frames):
            x = model_input(case, model, step_frames, step_means[step] if is_rnd else None)
            expected.append(error(*model(x)))
        errors = module.rollout_distillation_errors(model, frames, chunk_frames)
    assert errors.shape == (NUM_STEPS, NUM_ENVS) and (torch.stack(expected) > 0).all()
    torch.testing.assert_close(errors, torch.stack(expected), rtol=1e-5, atol=1e-9)
    if is_rnd:
        torch.testing.assert_close(model.frame_mean.mean, step_means[-1], rtol=1e-13, atol=1e-12)
        assert model.frame_mean.count.item() == count


# ------------------------------------------------------------------------------------------ each script's motivation_loss

N = 8  # flat frames of a tiny rollout; the minibatch is 4 of them
MB = slice(2, 6)
STATS = {
    "rnd": set(),
    "snd-v": {"similarity", "magnitude"},
    "snd-std": {"global_local_infonce", "local_local_infonce", "logit_norm", "feature_std"},
    "snd-vic": {"invariance", "variance", "covariance"},
}


def args_of(case, **overrides):
    script, method = case
    module = load_script(script)
    if method:
        overrides["method"] = method
    if "update_proportion" in overrides and not hasattr(module.Args, "update_proportion"):
        del overrides["update_proportion"]  # SND-STD and SND-VIC train the predictor on every element
    return tiny_args(module, **overrides)


def rollout_frames(case, seed: int = 5) -> tuple:
    """b_frames (s_t's newest frames) and b_next_frames (s_{t+1}'s): random frames, darker ones for s_t, so that a loss
    on the wrong ones shows."""
    torch.manual_seed(seed)
    shape = frame_shape(case)
    return torch.randint(0, 100, (N,) + shape, dtype=torch.uint8), torch.randint(100, 256, (N,) + shape, dtype=torch.uint8)


def prepared_model(models, case):
    """A copy of the case's model. RND's running mean is moved off zero, so a loss without it shows. The ReLU targets of
    SND-STD and SND-VIC (gain 0.5, zero biases) give features of about 1e-3 at init, where the target losses sit at
    their degenerate values (InfoNCE log N, VICReg's variance 2 x 0.99); their first convolution is scaled by 300,
    which scales every feature by 300, so that each term depends on its inputs."""
    model = copy.deepcopy(models[case])
    kind = kind_of(case)
    if kind == "rnd":
        torch.manual_seed(6)
        model.frame_mean.update(torch.randint(0, 256, (3, 4) + frame_shape(case), dtype=torch.uint8))
    elif kind in ("snd-std", "snd-vic"):
        first = model.target.local_encoder[0] if kind == "snd-std" else model.target[0]
        with torch.no_grad():
            first.weight *= 300.0
    return model


def expected_predictor_loss(case, model, frames) -> torch.Tensor:
    """The method's predictor loss, from the model, on `frames`: the MSE (RND, SND-V with nothing masked, SND-VIC) or
    the summed squared error (SND-STD) of the predictor against the target."""
    with torch.no_grad():
        target_features, predicted_features = model(model_input(case, model, frames))
    squared = (predicted_features - target_features).pow(2)
    return squared.sum() if kind_of(case) == "snd-std" else squared.mean()


@pytest.mark.parametrize("mb", [MB, torch.tensor([7, 0, 3, 3])], ids=["slice", "indices"])
@pytest.mark.parametrize("case", CASES)
def test_predictor_trains_on_the_frames_the_rewards_score(models, case, mb):
    """With nothing masked (`update_proportion` 1), `stats["predictor_loss"]` is the predictor's loss against the
    target on s_{t+1} (`b_next_frames[mb]`), not on s_t; RND's is 2/512 of the mean distillation error of those frames,
    read with the running mean subtracted."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    torch.manual_seed(7)
    loss, stats, _ = module.motivation_loss(model, args_of(case, update_proportion=1.0), b_frames, b_next_frames, mb)
    on_next = expected_predictor_loss(case, model, b_next_frames[mb])
    on_current = expected_predictor_loss(case, model, b_frames[mb])
    torch.testing.assert_close(stats["predictor_loss"], on_next, rtol=1e-5, atol=0)
    assert not torch.isclose(stats["predictor_loss"], on_current, rtol=1e-3)
    if kind_of(case) == "rnd":
        torch.testing.assert_close(loss, stats["predictor_loss"])
        with torch.no_grad():
            errors = error_of(case)(*model(model_input(case, model, b_next_frames[mb])))
            zero_mean = torch.zeros_like(model.frame_mean.mean)
            without_mean = model(model_input(case, model, b_next_frames[mb], zero_mean))
        torch.testing.assert_close(stats["predictor_loss"], 2 / 512 * errors.mean(), rtol=1e-5, atol=0)
        assert not torch.isclose(stats["predictor_loss"], (without_mean[0] - without_mean[1]).pow(2).mean(), rtol=1e-3)


@pytest.mark.parametrize("case", cases_of("rnd", "snd-v"))
def test_predictor_loss_keeps_update_proportion_of_the_elements(models, case, monkeypatch):
    """RND and SND-V mask the predictor's loss: masked_mse gets the predictor's output, the target's features of the same
    frames and `update_proportion` (default 0.25, as the authors' config)."""
    module, model = load_script(case[0]), prepared_model(models, case)
    calls, masked_mse = [], module.masked_mse
    monkeypatch.setattr(module, "masked_mse", lambda *a: calls.append(a) or masked_mse(*a))
    b_frames, b_next_frames = rollout_frames(case)
    args = args_of(case)
    assert args.update_proportion == 0.25
    _, stats, _ = module.motivation_loss(model, args, b_frames, b_next_frames, MB)
    assert len(calls) == 1
    predicted, target, proportion = calls[0]
    assert proportion == 0.25
    with torch.no_grad():
        expected_target, expected_predicted = model(model_input(case, model, b_next_frames[MB]))
    torch.testing.assert_close(target, expected_target)
    torch.testing.assert_close(predicted.detach(), expected_predicted)
    # a quarter of 4 x 512 elements: the loss is one of the masked means, not the full one
    assert not torch.isclose(stats["predictor_loss"], (expected_predicted - expected_target).pow(2).mean(), rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_motivation_loss_returns_its_statistics_and_the_target_features_of_s_t1(models, case):
    """(loss, stats, target features): the stats are `predictor_loss` and, for SND, `target_loss` and `target_<term>`
    for each of its loss terms, detached scalars (the update sums them over minibatches); the loss is predictor + target
    loss; the features are the target's of s_{t+1} (`b_next_frames[mb]`), detached, from which the update logs the
    target's feature spread and effective rank."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    loss, stats, target_features = module.motivation_loss(model, args_of(case), b_frames, b_next_frames, MB)
    kind = kind_of(case)
    expected_keys = {"predictor_loss"} | {f"target_{term}" for term in STATS[kind]}
    if kind != "rnd":
        expected_keys.add("target_loss")
    assert set(stats) == expected_keys
    for key, value in stats.items():
        assert isinstance(value, torch.Tensor) and value.shape == () and value.grad_fn is None, key
        assert torch.isfinite(value), key
    assert loss.shape == () and loss.requires_grad
    if kind == "rnd":
        torch.testing.assert_close(loss.detach(), stats["predictor_loss"])
    else:
        torch.testing.assert_close(loss.detach(), stats["predictor_loss"] + stats["target_loss"])
    assert target_features.shape == (4, 512) and target_features.grad_fn is None
    with torch.no_grad():
        on_next = model(model_input(case, model, b_next_frames[MB]))[0]
        on_current = model(model_input(case, model, b_frames[MB]))[0]
    torch.testing.assert_close(target_features, on_next, rtol=1e-5, atol=1e-6)
    assert module.target_feature_spread(target_features) > 0.01
    assert not torch.allclose(target_features, on_current, rtol=1e-2)


@pytest.mark.parametrize("case", cases_of("snd-std", "snd-vic"))
def test_snd_std_and_snd_vic_targets_learn_on_the_pairs_s_t_s_t1(models, case):
    """`target_loss` and its terms are the method's loss on the target's features of (s_t, s_{t+1}) = (`b_frames[mb]`,
    `b_next_frames[mb]`): ST-DIM with s_{t+1}'s classifier scores against s_t's local features, VICReg between the two."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    _, stats, _ = module.motivation_loss(model, args_of(case), b_frames, b_next_frames, MB)
    now, after = model_input(case, model, b_frames[MB]), model_input(case, model, b_next_frames[MB])
    with torch.no_grad():
        if kind_of(case) == "snd-std":
            (g, l), (g_next, l_next) = model.target(now), model.target(after)
            scores = model.target.classifier1(g_next), model.target.classifier2(l_next)
            expected, terms = module.st_dim_loss(*scores, l, g)
            swapped, _ = module.st_dim_loss(model.target.classifier1(g), model.target.classifier2(l), l_next, g_next)
        else:
            expected, terms = module.vicreg_loss(model.target(now), model.target(after))
            swapped, _ = module.vicreg_loss(model.target(now), model.target(now))
    torch.testing.assert_close(stats["target_loss"], expected, rtol=1e-5, atol=0)
    for term, value in terms.items():
        torch.testing.assert_close(stats[f"target_{term}"], value, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(stats["target_loss"], swapped, rtol=1e-2)


@pytest.mark.parametrize("case", cases_of("snd-v"))
def test_snd_v_target_learns_on_pairs_of_the_whole_rollouts_next_frames(models, case, monkeypatch):
    """The pairs come from `sample_pairs(len(b_next_frames), num_pairs)` (the whole rollout, not the minibatch) and index
    s_{t+1}'s frames; each side is augmented. With the augmentation made the identity and the pairs fixed,
    `target_loss` is the contrastive loss of the target's features of those frames."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    args = args_of(case)
    assert args.num_pairs == 64
    first, second = torch.tensor([0, 7, 3, 5, 1]), torch.tensor([0, 2, 3, 6, 4])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    drawn, augmented = [], []
    monkeypatch.setattr(module, "sample_pairs", lambda *a: drawn.append(a) or (first, second, labels))
    monkeypatch.setattr(module, "augment", lambda frames: augmented.append(frames) or frames)
    _, stats, _ = module.motivation_loss(model, args, b_frames, b_next_frames, MB)
    assert drawn == [(N, 64, b_next_frames.device)]
    assert len(augmented) == 2
    with torch.no_grad():
        views = [model.target(model_input(case, model, b_next_frames[i])) for i in (first, second)]
        expected, terms = module.contrastive_loss(*views, labels)
        on_current, _ = module.contrastive_loss(
            *[model.target(model_input(case, model, b_frames[i])) for i in (first, second)], labels
        )
    torch.testing.assert_close(augmented[0], model_input(case, model, b_next_frames[first]))
    torch.testing.assert_close(stats["target_loss"], expected, rtol=1e-5, atol=0)
    for term, value in terms.items():
        torch.testing.assert_close(stats[f"target_{term}"], value, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(stats["target_loss"], on_current, rtol=1e-2)


@pytest.mark.parametrize("case", cases_of("snd-v"))
def test_snd_v_predictors_target_pass_runs_without_gradients(models, case):
    """The target's features that the predictor imitates are computed under no_grad: no autograd graph is built
    through the target for the predictor's minibatch (the contrastive views, which train the target, do build one)."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    passes = []

    def record(layer, inputs, output):
        passes.append((inputs[0].detach().clone(), torch.is_grad_enabled(), output.grad_fn is not None))

    hook = model.target.register_forward_hook(record)
    try:
        module.motivation_loss(model, args_of(case), b_frames, b_next_frames, MB)
    finally:
        hook.remove()
    minibatch_input = model_input(case, model, b_next_frames[MB])
    predictor_passes = [
        (grad, graph) for x, grad, graph in passes if x.shape == minibatch_input.shape and torch.equal(x, minibatch_input)
    ]
    assert predictor_passes == [(False, False)]
    view_passes = [(grad, graph) for x, grad, graph in passes if x.shape[0] == 64]
    assert view_passes == [(True, True)] * 2


@pytest.mark.parametrize("case", CASES)
def test_the_predictors_loss_never_reaches_the_target(models, case, monkeypatch):
    """With the target's own loss made zero, a backward pass of the loss gives the target no gradient (it imitates
    detached features) and the predictor one; RND's frozen target gets none from anything."""
    module, model = load_script(case[0]), prepared_model(models, case)
    kind = kind_of(case)
    loss_name = {"snd-v": "contrastive_loss", "snd-std": "st_dim_loss", "snd-vic": "vicreg_loss"}.get(kind)
    if loss_name:
        original = getattr(module, loss_name)

        def zero_target_loss(*inputs):
            total, terms = original(*inputs)
            return total * 0.0, terms

        monkeypatch.setattr(module, loss_name, zero_target_loss)
    b_frames, b_next_frames = rollout_frames(case)
    loss, _, _ = module.motivation_loss(model, args_of(case), b_frames, b_next_frames, MB)
    loss.backward()
    for name, parameter in model.target.named_parameters():
        assert parameter.grad is None or not parameter.grad.any(), name
    for name, parameter in model.predictor.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", cases_of("snd-v", "snd-std", "snd-vic"))
def test_the_snd_loss_trains_target_and_predictor(models, case):
    """A backward pass of the whole loss reaches every predictor parameter and every target weight (SND-STD's
    classifiers included); a bias that shifts both sides of a pair alike (SND-V's distances, VICReg) may get none."""
    module, model = load_script(case[0]), prepared_model(models, case)
    b_frames, b_next_frames = rollout_frames(case)
    loss, _, _ = module.motivation_loss(model, args_of(case), b_frames, b_next_frames, MB)
    loss.backward()
    for name, parameter in model.predictor.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, parameter in model.target.named_parameters():
        assert parameter.grad is not None, name
        if name.endswith("weight") or kind_of(case) == "snd-std":
            assert parameter.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------------- the fast layout


def agent_loss(agent, obs, actions):
    _, logprob, entropy, ext_value, int_value = agent.get_action_and_value(obs, actions)
    return -logprob.mean() - 0.01 * entropy.mean() + (ext_value - 1.0).pow(2).mean() + (int_value - 0.5).pow(2).mean()


FAST_CASES = [pytest.param(("agent", RND), id="atari-agent"), pytest.param(("agent", PROCGEN), id="procgen-agent")]
FAST_CASES += [pytest.param(("motivation", case.values[0]), id=case.id) for case in CASES]


@pytest.mark.parametrize("fast_case", FAST_CASES)
def test_channels_last_and_fused_adam_train_as_contiguous_and_plain_adam(models, fast_case):
    """As the scripts build them: `.to(device, memory_format=torch.channels_last)` and `Adam(..., fused=True)` over the
    agent, RND's predictor or the whole SND model, trained on the script's own motivation_loss; the random draws (masks,
    pairs, augmentations) are made the same for both by seeding before each step. The losses agree to 1e-5 over 3
    steps, and so do the updates as a whole (Adam turns rounding noise in a near-zero gradient into a step of up to the
    learning rate, so single weights may differ by that much)."""
    kind, which = fast_case
    torch.manual_seed(7)
    if kind == "agent":
        atari = which == RND
        plain = load_script(which).Agent(18 if atari else 15)
        obs = torch.randint(0, 256, (N,) + ((4, 96, 96) if atari else (6, 64, 64)), dtype=torch.uint8)
        actions = torch.randint(0, 15, (N,))
        trained = plain

        def loss_of(model):
            return agent_loss(model, obs, actions)

    else:
        case, module = which, load_script(which[0])
        plain = prepared_model(models, case)
        b_frames, b_next_frames = rollout_frames(case)
        args = args_of(case)
        trained = plain.predictor if kind_of(case) == "rnd" else plain

        def loss_of(model):
            return module.motivation_loss(model, args, b_frames, b_next_frames, slice(0, N))[0]

    fast = copy.deepcopy(plain).to(torch.device("cpu"), memory_format=torch.channels_last)
    layouts = [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in fast.parameters()]
    assert any(layouts)
    fast_trained = fast.predictor if trained is not plain else fast
    initial = [p.detach().clone() for p in trained.parameters()]
    plain_optimizer = torch.optim.Adam(trained.parameters(), lr=1e-4)
    fast_optimizer = torch.optim.Adam(fast_trained.parameters(), lr=1e-4, fused=True)
    history = []
    for step in range(3):
        losses = []
        for model, optimizer in ((plain, plain_optimizer), (fast, fast_optimizer)):
            torch.manual_seed(100 + step)
            value = loss_of(model)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            losses.append(value.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-7)
        history.append(losses[0])
    assert history[2] != history[0]  # the models did train
    plain_update = torch.cat([(p - p0).flatten() for p, p0 in zip(trained.parameters(), initial)])
    fast_update = torch.cat([(p - p0).flatten() for p, p0 in zip(fast_trained.parameters(), initial)])
    assert (fast_update - plain_update).norm() < 0.01 * plain_update.norm()
