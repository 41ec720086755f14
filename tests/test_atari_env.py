"""The Atari protocol on a real Montezuma's Revenge env (SPEC §1.1, §1.4). Rewards and rooms are produced by writing
the game's RAM: the score (BCD, bytes 19-21) and the room number (byte 3), which ALE and the game read back."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT

MONTEZUMA = "ALE/MontezumaRevenge-v5"


@pytest.fixture
def env(rnd):
    env = rnd.make_env(MONTEZUMA, max_episode_steps=6)()
    yield env
    env.close()


def set_score(env, points: int):
    """Writes `points` into Montezuma's BCD score bytes; the next frame's reward is the difference."""
    digits = f"{points:06d}"
    ram = env.unwrapped.ale
    for address, pair in zip((19, 20, 21), (digits[0:2], digits[2:4], digits[4:6])):
        ram.setRAM(address, int(pair, 16))


def test_protocol_settings(env):
    ale_env = env.unwrapped
    assert ale_env._frameskip == 1  # the 4-step skip is MaxAndSkipEnv's
    assert ale_env.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    assert env.action_space.n == 18  # minimal action set of Montezuma's Revenge
    assert env.observation_space.shape == (4, 96, 96) and env.observation_space.dtype == np.uint8


def test_rewards_binarised_raw_score_kept(env):
    env.reset(seed=0)
    set_score(env, 50)  # +50
    _, reward, _, _, _ = env.step(0)
    assert reward == 1.0
    set_score(env, 150)  # +100: still one reward event
    _, reward, _, _, _ = env.step(0)
    assert reward == 1.0
    set_score(env, 0)  # -150: negative rewards become 0
    _, reward, _, _, _ = env.step(0)
    assert reward == 0.0
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(0)
    assert truncated and not terminated  # the episode cap is a truncation
    assert info["episode"]["r"] == 0.0  # raw game score: +50 +100 -150
    assert info["episode"]["reward_events"] == 2
    assert info["episode"]["l"] == 6


def test_room_id_from_ram(env):
    _, info = env.reset(seed=0)
    assert info["room_id"] == 1  # the game starts in room 1
    env.unwrapped.ale.setRAM(3, 5)
    _, _, _, _, info = env.step(0)
    assert info["room_id"] == 5
    for _ in range(5):
        _, _, _, truncated, info = env.step(0)
    assert truncated and info["episode"]["rooms"] == 2  # rooms 1 and 5


def test_frame_stack_newest_last_and_reset_padding(env):
    obs, _ = env.reset(seed=0)
    assert all(np.array_equal(obs[i], obs[-1]) for i in range(3))  # the stack starts with the reset frame
    previous = obs
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
        np.testing.assert_array_equal(obs[:-1], previous[1:])  # older frames shift towards index 0
        previous = obs


def test_games_without_rooms_report_none(rnd):
    env = rnd.make_env("ALE/Pong-v5", max_episode_steps=2)()
    _, info = env.reset(seed=0)
    assert "room_id" not in info
    env.step(0)
    _, _, _, truncated, info = env.step(0)
    assert truncated and "rooms" not in info["episode"]
    env.close()


def test_vector_env_reports_final_observation(rnd):
    envs = rnd.make_vector_env(MONTEZUMA, num_envs=2, max_episode_steps=3)
    obs, _ = envs.reset(seed=[1, 2])
    assert obs.shape == (2, 4, 96, 96) and obs.dtype == np.uint8
    for _ in range(3):
        obs, _, _, truncated, infos = envs.step(np.zeros(2, dtype=int))
    assert truncated.all()
    final = np.stack(infos["final_obs"])
    assert final.shape == (2, 4, 96, 96)
    assert all(np.array_equal(obs[e, i], obs[e, -1]) for e in range(2) for i in range(3))  # already the reset stack
    envs.close()


def test_env_id_forms_and_suggestions(rnd):
    assert rnd.ale_game_id("MontezumaRevenge-v5") == MONTEZUMA
    assert rnd.ale_game_id(MONTEZUMA) == MONTEZUMA
    assert rnd.ale_game_id("Pitfall-v5") == "ALE/Pitfall-v5"
    with pytest.raises(ValueError, match="did you mean MontezumaRevenge-v5"):
        rnd.ale_game_id("MontezumasRevenge-v5")
    with pytest.raises(ValueError, match="did you mean MontezumaRevenge-v5"):
        rnd.ale_game_id("montezumarevenge-v5")
    with pytest.raises(ValueError, match="any ALE game works"):
        rnd.ale_game_id("CartPole-v1")


def test_a_crash_after_the_envs_started_exits_instead_of_hanging():
    """The env workers ignore SIGTERM (the main process saves first); a crash must still end the program, not leave
    it waiting for workers that multiprocessing's exit-time terminate() cannot stop."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from conftest import load_script
        envs = load_script("ppo_rnd_atari.py").make_vector_env("ALE/Pong-v5", 2, 20)
        envs.reset(seed=[1, 2])
        raise RuntimeError("a bug in the training loop")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "RuntimeError: a bug in the training loop" in result.stderr
