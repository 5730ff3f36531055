"""The one guarded training loop, on its own and inside distributed training.

The fits' own training (solo, combined, ``train``) is tested through the
fitter in ``tests/reliability/test_training.py``; here the loop's contract is
checked directly on a small real problem, and through
`~astrokin.survey.train_distributed`, whose divergences used to be a plain
``FloatingPointError``.
"""

import pytest
from astropy import units as u

torch = pytest.importorskip("torch")

from astrokin.exceptions import TrainingDivergedError  # noqa: E402
from astrokin.fitting.training import TrainingLoop  # noqa: E402
from astrokin.models import ExponentialArctanDisk  # noqa: E402


def _problem(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 64)[:, None]
    return layer, x


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_the_loop_trains_weights_history_and_schedule():
    layer, x = _problem()
    opt = torch.optim.SGD(layer.parameters(), lr=0.2)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    seen = []
    loop = TrainingLoop(layer, opt, schedule=schedule)
    # Two batches per epoch of different sizes: the epoch loss is their weighted mean.
    history = loop.run(3, lambda epoch: [(x[:16], 16), (x[16:], 48)],
                       lambda b: ((layer(b) - (2 * b + 1)) ** 2).mean(),
                       end_of_epoch=lambda epoch, loss: seen.append(
                           (epoch, loss, opt.param_groups[0]["lr"])))
    assert loop.info == {"epochs_requested": 3, "epochs_completed": 3, "stopped": "completed",
                         "message": None}
    assert [s[0] for s in seen] == [0, 1, 2] and [s[1] for s in seen] == history
    # The schedule stepped once per epoch, before end_of_epoch saw it.
    assert [s[2] for s in seen] == pytest.approx([0.1, 0.05, 0.025])
    assert history[-1] < history[0]
    assert not layer.training  # left ready for inference


def test_the_epoch_loss_is_weighted_by_galaxies():
    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=0.0))
    target = torch.cat([torch.zeros(16, 1), torch.ones(48, 1)])
    weights0 = _weights(layer)
    with torch.no_grad():
        per_batch = [float(((layer(x[:16]) - target[:16]) ** 2).mean()),
                     float(((layer(x[16:]) - target[16:]) ** 2).mean())]
    loop.run(1, lambda epoch: [((x[:16], target[:16]), 16), ((x[16:], target[16:]), 48)],
             lambda b: ((layer(b[0]) - b[1]) ** 2).mean())
    assert loop.history[0] == pytest.approx((16 * per_batch[0] + 48 * per_batch[1]) / 64)
    assert all(torch.equal(v, weights0[k]) for k, v in layer.state_dict().items())


def test_a_nan_loss_restores_the_weights_that_gave_the_last_finite_one():
    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.Adam(layer.parameters(), lr=0.1))
    snapshots = []

    def loss(b):
        snapshots.append(_weights(layer))
        value = ((layer(b) - 3 * b) ** 2).mean()
        return value * float("nan") if len(snapshots) == 4 else value

    with pytest.raises(TrainingDivergedError, match=r"epoch 4/10, batch 1: the loss became nan"):
        loop.run(10, lambda epoch: [(x, 64)], loss)
    # Step 4 saw NaN; the weights that gave step 3 its finite loss are back.
    assert all(torch.equal(v, snapshots[2][k]) for k, v in layer.state_dict().items())
    assert loop.info["stopped"] == "diverged" and loop.info["epochs_completed"] == 3
    assert len(loop.history) == 3 and loop.has_good_weights


def test_exploding_losses_and_gradients_are_divergences():
    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=0.01), unit="step")
    calls = []

    def exploding(b):
        calls.append(1)
        return ((layer(b) - b) ** 2).mean() * (1e9 if len(calls) > 2 else 1.0)

    with pytest.raises(TrainingDivergedError, match=r"step 3/5: the loss exploded"):
        loop.run(5, lambda epoch: [(x, 64)], exploding)

    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=0.01))
    before = _weights(layer)

    def bad_gradient(b):
        out = layer(b)
        out.register_hook(lambda g: g * float("inf"))
        return ((out - b) ** 2).mean()

    with pytest.raises(TrainingDivergedError, match="gradients became non-finite"):
        loop.run(5, lambda epoch: [(x, 64)], bad_gradient)
    assert all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())


def test_interrupts_restore_and_propagate_and_a_good_start_is_kept():
    layer, x = _problem()
    start = _weights(layer)
    loop = TrainingLoop(layer, torch.optim.Adam(layer.parameters(), lr=0.1), start_is_good=True)

    def interrupted(b):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loop.run(3, lambda epoch: [(x, 64)], interrupted)
    assert loop.info["stopped"] == "interrupted" and loop.has_good_weights
    assert all(torch.equal(v, start[k]) for k, v in layer.state_dict().items())


def test_gradients_are_clipped_when_asked():
    layer, x = _problem()
    # SGD with lr 1: the step is minus the (clipped) gradient.
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=1.0), clip_grad_norm=0.5)
    before = torch.cat([p.detach().clone().ravel() for p in layer.parameters()])
    loop.run(1, lambda epoch: [(x, 64)], lambda b: ((layer(b) - 100 * b) ** 2).mean())
    after = torch.cat([p.detach().ravel() for p in layer.parameters()])
    assert float(torch.linalg.norm(after - before)) == pytest.approx(0.5, rel=1e-5)


def test_reduce_sets_the_value_checked_and_recorded():
    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=0.0),
                        reduce=lambda value: 10 * value)
    with torch.no_grad():
        raw = float(((layer(x) - x) ** 2).mean())
    loop.run(1, lambda epoch: [(x, 64)], lambda b: ((layer(b) - b) ** 2).mean())
    assert loop.history == [pytest.approx(10 * raw)]


def test_resuming_continues_the_history():
    layer, x = _problem()
    loop = TrainingLoop(layer, torch.optim.SGD(layer.parameters(), lr=0.1))
    epochs = []
    history = loop.run(5, lambda epoch: epochs.append(epoch) or [(x, 64)],
                       lambda b: ((layer(b) - b) ** 2).mean(), first_epoch=3,
                       history=[1.0, 0.9, 0.8])
    assert epochs == [3, 4] and history[:3] == [1.0, 0.9, 0.8] and len(history) == 5
    assert loop.info["epochs_completed"] == 5


class _BreakingDisk(ExponentialArctanDisk):
    """A disc whose rotation curve turns NaN after ``break_after`` evaluations."""

    calls = 0
    break_after = 2

    @staticmethod
    def rotation_velocity(xp, r, r_turn, v_max):
        _BreakingDisk.calls += 1
        v = ExponentialArctanDisk.rotation_velocity(xp, r, r_turn, v_max)
        return v * float("nan") if _BreakingDisk.calls > _BreakingDisk.break_after else v


def test_distributed_training_stops_on_divergence_like_every_training(tmp_path):
    from astrokin.survey import train_distributed, write_shards
    from astrokin.synthetic import make_galaxies

    gals = make_galaxies(ExponentialArctanDisk(), 8, seed=0)
    write_shards(gals.mom0, gals.mom1 * u.km / u.s, tmp_path / "shards",
                 pixel_scale=1 * u.arcsec, beam=2 * u.arcsec, shard_size=4)
    _BreakingDisk.calls = 0
    with pytest.raises(TrainingDivergedError, match=r"epoch 2/3, batch 1: the loss became nan"):
        train_distributed(tmp_path / "shards", tmp_path / "net.pt", model=_BreakingDisk(),
                          epochs=3, batch_size=4, learning_rate=1e-3, device="cpu", log=None)
    assert not (tmp_path / "net.pt").exists()
