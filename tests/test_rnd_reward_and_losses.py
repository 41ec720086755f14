"""RND intrinsic reward, its input, the masked predictor loss and the running mean, against values computed by hand."""

import pytest
import torch


def test_distillation_error_is_half_the_squared_distance(rnd):
    target = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]])
    predicted = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, -1.0, 2.0]])
    # 0.5 * (1 + 4 + 0), 0.5 * 1, 0
    torch.testing.assert_close(rnd.distillation_error(target, predicted), torch.tensor([2.5, 0.5, 0.0]))


def test_intrinsic_reward_scales_by_eta_and_clips_to_unit_interval(rnd):
    error = torch.tensor([2.5, 0.5, 0.0, 1.2])
    torch.testing.assert_close(rnd.intrinsic_reward(error, eta=0.3), torch.tensor([0.75, 0.15, 0.0, 0.36]))
    torch.testing.assert_close(rnd.intrinsic_reward(error, eta=1.0), torch.tensor([1.0, 0.5, 0.0, 1.0]))


def test_rnd_input_subtracts_the_mean_without_std(rnd):
    frames = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    mean = torch.tensor([[51.0, 51.0], [51.0, 51.0]], dtype=torch.float64)
    x = rnd.rnd_input(frames, mean)
    assert x.shape == (1, 1, 2, 2)
    torch.testing.assert_close(x, torch.tensor([[[[-0.2, 0.8], [0.0, 0.2]]]]))


def test_masked_mse_keeps_the_elements_drawn_below_the_proportion(rnd, monkeypatch):
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    draws = torch.tensor([[0.10, 0.50], [0.20, 0.90]])  # kept: 0.10 and 0.20 (< 0.25)
    monkeypatch.setattr(torch, "rand_like", lambda t: draws)
    # (1^2 + 3^2) / 2 kept elements
    torch.testing.assert_close(rnd.masked_mse(predicted, target, keep_proportion=0.25), torch.tensor(5.0))
    # keep everything: the plain MSE (1 + 4 + 9 + 16) / 4
    torch.testing.assert_close(rnd.masked_mse(predicted, target, keep_proportion=1.0), torch.tensor(7.5))


def test_masked_mse_keeps_a_quarter_of_the_elements(rnd):
    """The kept proportion, read off the gradient (non-zero exactly on the kept elements), is 25%."""
    torch.manual_seed(0)
    predicted = torch.zeros(512, 512, requires_grad=True)
    target = torch.ones(512, 512)
    rnd.masked_mse(predicted, target, keep_proportion=0.25).backward()
    kept = (predicted.grad != 0).float().mean().item()
    assert kept == pytest.approx(0.25, abs=0.005)


def test_masked_mse_does_not_train_the_target(rnd):
    predicted = torch.zeros(4, 3, requires_grad=True)
    target = torch.ones(4, 3, requires_grad=True)
    rnd.masked_mse(predicted, target, keep_proportion=1.0).backward()
    assert target.grad is None
    torch.testing.assert_close(predicted.grad, torch.full((4, 3), -2.0 / 12))


def test_running_mean_counts_each_step_batch_once_from_a_zero_start(rnd):
    mean = rnd.RunningMean((2,), torch.device("cpu"))
    # two vector steps of 2 envs: batch means (3, 6) and (9, 0); after each: (0 + (3, 6)) / 2, (0 + (3, 6) + (9, 0)) / 3
    step_means = mean.update(torch.tensor([[[2, 4], [4, 8]], [[9, 0], [9, 0]]], dtype=torch.uint8))
    expected = torch.tensor([[1.5, 3.0], [4.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(step_means, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(mean.mean, expected[-1], rtol=0, atol=1e-15)
    assert mean.count == 3
    step_means = mean.update(torch.tensor([[[12, 10], [12, 10]]], dtype=torch.uint8))  # (0 + 3 + 9 + 12, 6 + 0 + 10) / 4
    torch.testing.assert_close(step_means, torch.tensor([[6.0, 4.0]], dtype=torch.float64), rtol=0, atol=1e-15)
    assert mean.count == 4


def test_target_feature_spread_is_the_mean_feature_std(rnd):
    features = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])  # stds 2 and 0
    torch.testing.assert_close(rnd.target_feature_spread(features), torch.tensor(1.0))


def test_explained_variance(rnd):
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(rnd.explained_variance(returns, returns), torch.tensor(1.0))
    torch.testing.assert_close(rnd.explained_variance(torch.zeros(4), returns), torch.tensor(0.0))
    assert torch.isnan(rnd.explained_variance(torch.zeros(4), torch.ones(4)))
