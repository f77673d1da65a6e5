"""§7.1's conditional GAN p(x | c): the networks read the label, a conditional run resumes
exactly, and its export is what the service's card and runtime expect (docs/conditional.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from service.contract.card import Conditioning, read_card, write_card
from training.__main__ import main
from training.config import TrainConfig, preset, with_overrides
from training.data.mnist import MNIST, Split, load_mnist
from training.evaluation.conditional import class_samples
from training.evaluation.generators import load_generator, prior_labels, torch_source
from training.figures.conditional import FIGURES
from training.gan.networks import Discriminator, Generator, Maxout, build_networks, one_hot
from training.gan.train import train
from training.onnx_io import cpu_session
from training.release.average import average_generator
from training.release.export import ImageGenerator
from training.release.select import (
    CHEAP_PER_CLASS,
    ValidationClassFD,
    select_snapshot,
    select_window,
)
from training.runs import CHECKPOINT, iterations_per_epoch, load_checkpoint, read_metrics

from .conftest import TINY_CONDITIONAL

REPO = Path(__file__).resolve().parents[2]


# --- the networks ---------------------------------------------------------------------


def test_conditional_preset_widens_only_the_first_layers() -> None:
    g, d = build_networks(preset("mnist-conditional"))
    linears = [m for m in g.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (110, 1200), (1200, 1200), (1200, 784)]  # [z, c]: 100 + 10
    maxouts = [m for m in d.modules() if isinstance(m, Maxout)]
    assert [(m.units, m.pieces, m.linear.in_features) for m in maxouts] == [
        (240, 5, 794), (240, 5, 240)]  # pixels and c, then the paper's hidden layer
    unconditional = build_networks(preset("mnist-paper"))[1]
    assert [m.linear.in_features for m in unconditional.modules()
            if isinstance(m, Maxout)] == [784, 240]


def test_one_hot_is_the_cards_float_one_hot() -> None:
    c = one_hot(torch.tensor([2, 0, 9]), 10)
    assert c.dtype == torch.float32 and c.shape == (3, 10)
    np.testing.assert_array_equal(c.numpy(), Conditioning("class", "c", 10, ()).one_hot(
        np.array([2, 0, 9])))


def test_generator_output_depends_on_the_label() -> None:
    torch.manual_seed(0)
    g = Generator(8, (16,), 784, sigmoid_output=True, init_range=0.5, cond_dim=10).eval()
    z = torch.randn(1, 8).repeat(10, 1)  # one z under every label
    x = g(z, one_hot(torch.arange(10), 10))
    assert x.shape == (10, 784)
    differences = torch.cdist(x, x)
    assert (differences + torch.eye(10) > 1e-3).all()  # ten different images
    torch.testing.assert_close(g(z[:3], one_hot(torch.tensor([4, 4, 4]), 10)), x[[4, 4, 4]])


def test_discriminator_reads_the_label_undropped_beside_the_pixels() -> None:
    torch.manual_seed(0)
    # input dropout that drops (almost surely) every pixel; no other dropout
    d = Discriminator(784, (8,), 3, input_keep=1e-9, hidden_keep=1.0, init_range=0.5,
                      cond_dim=10).train()
    x = torch.rand(10, 784)
    c = one_hot(torch.arange(10), 10)
    logits = d(x, c)
    assert logits.shape == (10, 1)
    # what the first maxout layer sees: dropped pixels (all zero) and the intact label
    expected = d.net[1:](torch.cat([torch.zeros(10, 784), c], dim=1))
    torch.testing.assert_close(logits, expected)
    assert logits.unique().numel() == 10  # so each label gives its own answer
    d.eval()  # without dropout the pixels count too
    assert not torch.allclose(d(x, c), d(torch.zeros_like(x), c))


def test_a_conditional_run_needs_its_labels(tmp_path: Path) -> None:
    config = with_overrides(preset("mnist-conditional"), {**TINY_CONDITIONAL, "epochs": 1})
    images = np.random.default_rng(0).uniform(0, 1, (200, 784)).astype(np.float32)
    with pytest.raises(ValueError, match="one label in 0..9 per training row"):
        train(config, tmp_path / "none", data=images, progress=False)
    with pytest.raises(ValueError, match="one label in 0..9 per training row"):
        train(config, tmp_path / "bad", data=images, labels=np.full(200, 10), progress=False)


def test_an_interrupted_conditional_run_resumes_exactly(mnist_dir: Path, tmp_path: Path) -> None:
    config = with_overrides(preset("mnist-conditional"), {**TINY_CONDITIONAL, "epochs": 2,
                                                          "snapshot_every": 0})
    split = load_mnist(mnist_dir).train
    data = {"data": split.images[:1000], "labels": split.labels[:1000], "progress": False}
    whole = train(config, tmp_path / "whole", **data)
    per_epoch = iterations_per_epoch(config, 1000)
    stop_at = per_epoch + per_epoch // 2  # mid-epoch, as a Ctrl-C would
    first = train(config, tmp_path / "split", max_steps=stop_at, **data)
    assert first.interrupted and first.step == stop_at
    second = train(config, tmp_path / "split", resume=True, **data)
    assert second.step == whole.step == 2 * per_epoch
    a, b = (load_checkpoint(tmp_path / run / CHECKPOINT) for run in ("whole", "split"))
    for net in ("generator", "discriminator"):
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            torch.testing.assert_close(a[net][key], b[net][key], rtol=0, atol=0,
                                       msg=f"{net}.{key}")
    assert a["generator"]["hidden.0.weight"].shape == (32, 110)
    assert [m["step"] for m in read_metrics(tmp_path / "split")] == \
        [m["step"] for m in read_metrics(tmp_path / "whole")]


# --- export ---------------------------------------------------------------------------


def torch_pair(run: Path, epoch: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    g, d = build_networks(TrainConfig.load(run / "config.json"))
    g.load_state_dict(torch.load(run / "snapshots" / f"generator-epoch-{epoch:04d}.pt"))
    d.load_state_dict(torch.load(run / "snapshots" / f"discriminator-epoch-{epoch:04d}.pt"))
    return ImageGenerator(g).eval(), d.eval()


def test_conditional_graphs_take_c_beside_z_and_x(tiny_conditional_model: Path) -> None:
    g_sess = cpu_session(tiny_conditional_model / "generator.onnx")
    d_sess = cpu_session(tiny_conditional_model / "discriminator.onnx")
    assert [(i.name, i.shape) for i in g_sess.get_inputs()] == [
        ("z", ["batch", 100]), ("c", ["batch", 10])]
    assert [(o.name, o.shape) for o in g_sess.get_outputs()] == [("x", ["batch", 1, 28, 28])]
    assert [(i.name, i.shape) for i in d_sess.get_inputs()] == [
        ("x", ["batch", 1, 28, 28]), ("c", ["batch", 10])]
    assert [(o.name, o.shape) for o in d_sess.get_outputs()] == [("logit", ["batch", 1])]


@pytest.mark.parametrize("n", [1, 7, 64])
def test_conditional_onnx_matches_torch_on_random_z_and_labels(
        tiny_conditional_model: Path, tiny_conditional_run: Path, n: int) -> None:
    g, d = torch_pair(tiny_conditional_run, 2)
    rng = np.random.default_rng(n)
    z = rng.uniform(-np.sqrt(3), np.sqrt(3), (n, 100)).astype(np.float32)
    x = rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32)
    c = one_hot(torch.from_numpy(rng.integers(0, 10, n)), 10)
    images = cpu_session(tiny_conditional_model / "generator.onnx").run(
        None, {"z": z, "c": c.numpy()})[0]
    logits = cpu_session(tiny_conditional_model / "discriminator.onnx").run(
        None, {"x": x, "c": c.numpy()})[0]
    with torch.no_grad():
        assert np.abs(images - g(torch.from_numpy(z), c).numpy()).max() <= 1e-5
        assert np.abs(logits - d(torch.from_numpy(x), c).numpy()).max() <= 1e-5


def test_conditional_card_declares_the_label(tiny_conditional_model: Path,
                                             tiny_conditional_run: Path) -> None:
    card = read_card(tiny_conditional_model)
    assert card.conditioning == Conditioning("class", "c", 10, tuple("0123456789"))
    # the files name their first input, as every card does; c is the conditioning's
    assert card.raw["files"]["generator.onnx"]["input"] == "z"
    assert card.raw["files"]["discriminator.onnx"]["input"] == "x"
    assert card.generator.inputs == {"z": (100,), "c": (10,)}
    assert card.discriminator.inputs == {"x": (1, 28, 28), "c": (10,)}
    assert card.raw["training"]["config"]["classes"] == 10
    assert card.raw["training"]["nearest_preset"]["name"] == "mnist-conditional"
    assert max(card.raw["export"]["parity_max_abs_error"].values()) <= 1e-5


def test_the_service_runtime_serves_the_conditional_export(
        tiny_conditional_model: Path, tiny_conditional_run: Path) -> None:
    from service.runtime import load_model

    model = load_model(tiny_conditional_model, ["CPUExecutionProvider"], threads=1)
    g, d = torch_pair(tiny_conditional_run, 2)
    z = model.latents(10, seed=5)
    labels = np.arange(10)
    served = model.generate(z, labels)
    with torch.no_grad():
        expected = g(torch.from_numpy(z), one_hot(torch.from_numpy(labels), 10)).numpy()
        expected_logits = d(torch.from_numpy(expected), one_hot(torch.from_numpy(labels), 10))
    assert np.abs(served.reshape(expected.shape) - expected).max() <= 1e-5
    assert np.abs(model.logits(served, labels) - expected_logits.numpy().ravel()).max() <= 1e-4
    # the label, not z, decides what is drawn: one z under two labels
    same_z = np.repeat(z[:1], 2, axis=0)
    assert np.abs(np.diff(model.generate(same_z, np.array([3, 8])), axis=0)).max() > 1e-3


def test_the_exported_and_the_snapshot_generator_sample_alike(
        tiny_conditional_model: Path, tiny_conditional_run: Path, tmp_path: Path) -> None:
    exported = load_generator(tiny_conditional_model)
    snapshot = load_generator(tiny_conditional_run / "snapshots" / "generator-epoch-0002.pt")
    assert exported.classes == snapshot.classes == 10
    np.testing.assert_allclose(exported.sample(50, seed=1), snapshot.sample(50, seed=1),
                               atol=1e-5)  # the same z and the same prior labels
    np.testing.assert_allclose(exported.sample(20, seed=1, labels=7),
                               snapshot.sample(20, seed=1, labels=7), atol=1e-5)
    # a bare generator.onnx finds its label input in the graph
    bare = load_generator(shutil.copy(tiny_conditional_model / "generator.onnx",
                                      tmp_path / "bare.onnx"))
    assert bare.classes == 10
    np.testing.assert_allclose(bare.sample(20, 1, labels=3), exported.sample(20, 1, labels=3),
                               atol=1e-6)


def test_labels_are_drawn_from_the_prior_on_their_own_stream(
        tiny_conditional_run: Path) -> None:
    source = load_generator(tiny_conditional_run)
    labels = prior_labels(20_000, seed=0, classes=10)
    counts = np.bincount(labels, minlength=10) / 20_000
    prior = np.array([4932, 5678, 4968, 5101, 4859, 4506, 4951, 5175, 4842, 4988]) / 50_000
    assert np.abs(counts - prior).max() < 0.01  # 4 standard errors at most
    np.testing.assert_array_equal(source.labels(20_000, 0), labels)
    assert not np.array_equal(prior_labels(100, 1, 10), prior_labels(100, 0, 10))
    # z is the seed contract's, whatever the labels
    z = np.random.default_rng(3).uniform(-np.sqrt(3), np.sqrt(3), (5, 100)).astype(np.float32)
    np.testing.assert_array_equal(source.latents(5, 3), z)
    np.testing.assert_array_equal(source.sample(5, 3), source.images(z, prior_labels(5, 3, 10)))
    with pytest.raises(ValueError, match="conditional: give one label per row"):
        source.images(z)
    with pytest.raises(ValueError, match="labels must be integers in 0..9"):
        source.images(z, 10)


def test_an_unconditional_export_is_unchanged(tiny_models_dir: Path, tmp_path: Path) -> None:
    folder = tiny_models_dir / "tiny"
    card = read_card(folder)
    assert card.conditioning is None and "conditioning" not in card.raw
    assert [i.name for i in cpu_session(folder / "generator.onnx").get_inputs()] == ["z"]
    assert [i.name for i in cpu_session(folder / "discriminator.onnx").get_inputs()] == ["x"]
    assert load_generator(folder).classes == 0
    with pytest.raises(ValueError, match="unconditional: it takes no labels"):
        load_generator(folder).sample(3, 0, labels=1)


def test_the_shipped_card_round_trips(tmp_path: Path) -> None:
    shipped = REPO / "models" / "mnist-mlp"
    copy = tmp_path / "mnist-mlp"
    shutil.copytree(shipped, copy)
    before = (copy / "model.json").read_bytes()
    card = read_card(copy)
    assert card.conditioning is None
    write_card(copy, card.raw)
    assert (copy / "model.json").read_bytes() == before
    source = load_generator(copy)
    assert source.classes == 0 and source.sample(4, 0).shape == (4, 784)


# --- selection, evaluation, figures -----------------------------------------------------


def test_figures_command_draws_a_snapshot(tiny_conditional_run: Path, tiny_mnist_run: Path,
                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    snapshot = tiny_conditional_run / "snapshots" / "generator-epoch-0001.pt"
    assert main(["figures", str(snapshot), "--out", str(tmp_path)]) == 0
    for name in FIGURES.values():
        with Image.open(tmp_path / name) as image:  # 10 rows and 10 columns of 28 + 2 px, x3
            assert image.size == (3 * (10 * 30 + 2), 3 * (10 * 30 + 2)), name
    assert capsys.readouterr().out.count("wrote") == 3
    assert main(["figures", str(tiny_mnist_run), "--out", str(tmp_path / "u")]) == 2
    assert "is unconditional: these figures need labels" in capsys.readouterr().err


def test_fixed_z_figure_holds_one_z_per_row_under_every_label(tiny_conditional_run: Path,
                                                              tmp_path: Path) -> None:
    from PIL import Image

    from training.figures.conditional import fixed_z_across_classes

    source = load_generator(tiny_conditional_run)
    path = fixed_z_across_classes(tmp_path / "f.png", source, seed=4, rows=2)
    z = source.latents(2, 4)
    expected = source.images(np.repeat(z, 10, axis=0), np.tile(np.arange(10), 2))
    with Image.open(path) as image:
        picture = np.asarray(image)[::3, ::3]  # undo the x3 zoom
    for r in range(2):
        for k in range(10):
            top, left = 2 + r * 30, 2 + k * 30
            cell = picture[top:top + 28, left:left + 28]
            want = np.round(expected[r * 10 + k].reshape(28, 28) * 255)
            assert np.abs(cell - want).max() <= 1, (r, k)


def small_mnist(mnist_dir: Path) -> MNIST:
    """Training images cut to 3,000 and validation to 2,000 (about 200 of each digit):
    nearest neighbours over all of MNIST take most of a minute per call on two cores."""
    full = load_mnist(mnist_dir)
    return MNIST(Split(full.train.images[:3000], full.train.labels[:3000]),
                 Split(full.valid.images[:2000], full.valid.labels[:2000]), full.test)


def test_select_ranks_conditional_snapshots_by_validation_class_fd(
        tiny_conditional_run: Path, mnist_dir: Path) -> None:
    mnist = small_mnist(mnist_dir)
    selection = select_snapshot(tiny_conditional_run, mnist, progress=False, finalists=2,
                                n_samples=500)
    assert selection.criterion == "class_fd" and set(selection.full) == {1, 2}
    fd = ValidationClassFD(mnist)
    for epoch, score in selection.full.items():
        snapshot = load_generator(tiny_conditional_run / "snapshots"
                                  / f"generator-epoch-{epoch:04d}.pt")
        assert score == pytest.approx(fd(snapshot, 50))  # 500 samples: 50 of each digit
        assert selection.cheap[epoch] == pytest.approx(fd(snapshot, CHEAP_PER_CLASS))
    best = min(selection.full, key=selection.full.get)  # a distance: lower is better
    assert selection.epoch == best and selection.best.name == f"generator-epoch-{best:04d}.pt"
    card = selection.to_card()
    assert card["criterion"] == "class_fd" and "validation class-conditional FD" in card["by"]


def test_average_window_of_a_conditional_run_is_chosen_by_class_fd(
        tiny_conditional_run: Path, mnist_dir: Path) -> None:
    mnist = small_mnist(mnist_dir)
    chosen = select_window(tiny_conditional_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                           progress=False, memorisation_limit=1.0, agreement_floor=0.0)
    scores = {k: v["validation_class_fd"] for k, v in chosen.scores.items()}
    g_state, _ = average_generator(tiny_conditional_run, 1, 2)
    source = torch_source(g_state, TrainConfig.load(tiny_conditional_run / "config.json"), "a")
    assert scores["1:2"] == pytest.approx(ValidationClassFD(mnist)(source, 30))
    assert f"{chosen.window[0]}:{chosen.window[1]}" == min(scores, key=scores.get)
    assert "class-conditional FD" in chosen.to_card()["by"]


def test_average_window_below_the_label_agreement_floor_is_passed_over(
        tiny_conditional_run: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.release.select as select_module

    mnist = small_mnist(mnist_dir)
    free = select_window(tiny_conditional_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                         progress=False, memorisation_limit=1.0, agreement_floor=0.0)
    best = min(free.scores, key=lambda k: free.scores[k]["validation_class_fd"])
    other = ({"1:2", "2:2"} - {best}).pop()
    worst = {best: 0.96, other: 0.975}  # the best class-FD window misses one class
    monkeypatch.setattr(select_module, "worst_class_agreement",
                        lambda source, n: worst[source.description.split()[-1]])
    chosen = select_window(tiny_conditional_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                           progress=False, memorisation_limit=1.0, agreement_floor=0.97)
    assert f"{chosen.window[0]}:{chosen.window[1]}" == other
    assert chosen.scores[best]["worst_class_label_agreement"] == 0.96
    assert "label agreement" in chosen.to_card()["by"]
    worst[other] = 0.5
    with pytest.raises(ValueError, match="label agreement at least 97%"):
        select_window(tiny_conditional_run, mnist, [(1, 2), (2, 2)], n_samples=300,
                      progress=False, memorisation_limit=1.0, agreement_floor=0.97)


def test_worst_class_agreement_is_the_lowest_per_class_share_on_the_selection_seed(
        tiny_conditional_run: Path) -> None:
    from training.evaluation.classifier import load_classifier, predict
    from training.release.select import SELECTION_SEED, worst_class_agreement

    source = load_generator(tiny_conditional_run / "snapshots" / "generator-epoch-0002.pt")
    images, labels = class_samples(source, 20, SELECTION_SEED)
    predicted = predict(load_classifier(), images)
    shares = [np.mean(predicted[labels == k] == k) for k in range(10)]
    assert worst_class_agreement(source, 20) == pytest.approx(min(shares))


def test_cli_export_of_a_conditional_run_evaluates_it(
        tiny_conditional_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import training.release.export as export_module

    real_evaluate = export_module.evaluate

    def small_evaluate(*args, **kwargs):  # the full 3 x 10,000 samples take minutes
        return real_evaluate(*args, **{**kwargs, "n_samples": 500, "seeds": (0,),
                                       "n_memorisation": 200})

    monkeypatch.setattr(export_module, "evaluate", small_evaluate)
    assert main(["export", str(tiny_conditional_run), "--name", "cond", "--select",
                 "--finalists", "1", "--models-dir", str(tmp_path)]) == 0
    folder = tmp_path / "cond"
    card = read_card(folder)
    assert card.conditioning is not None and card.conditioning.classes == 10
    selection = card.raw["export"]["selection"]
    assert selection["criterion"] == "class_fd" and set(selection["scores"]) == {"1", "2"}
    assert list(selection["finalists"]) == [min(selection["scores"],
                                                key=selection["scores"].get)]
    evaluation = card.raw["evaluation"]
    # the classifier's scores lead, Parzen follows as the faithfulness check
    assert list(evaluation)[:4] == ["classifier_fd", "precision_recall", "label_agreement",
                                    "class_fd"]
    assert list(evaluation)[4] == "parzen" and evaluation["parzen"]["n_samples"] == 500
    agreement = evaluation["label_agreement"]
    assert agreement["n_per_class"] == 50 and len(agreement["per_class"]) == 10
    assert agreement["overall"] == pytest.approx(np.mean(agreement["per_class"]))
    assert agreement["classifier_test_accuracy"] > 0.98
    class_fd = evaluation["class_fd"]
    assert class_fd["mean"] == pytest.approx(np.mean(class_fd["per_class"]))
    assert 0 < class_fd["floor_valid_vs_test_mean"] < class_fd["mean"]  # a 2-epoch toy G
    pr = evaluation["precision_recall"]
    assert 0 <= pr["precision"] <= 1 and 0 <= pr["recall"] <= 1 and pr["k"] == 3
    assert pr["reference_valid_vs_test"]["precision"] > 0.8  # real against real
    report = json.loads((folder / "evaluation" / "report.json").read_text())
    assert report["classes"] == 10 and set(report["validation_class_fd_by_epoch"]) == {"1", "2"}
    shipped = read_card(REPO / "models" / "mnist-mlp").raw["evaluation"]["classifier_fd"]
    assert report["unconditional_reference"]["classifier_fd_features"] == \
        shipped["features"]["samples_vs_test"]
    for name in (*FIGURES.values(), "figure2_samples_and_nearest.png", "report.md",
                 "training_curves.png"):
        assert (folder / "evaluation" / name).is_file(), name
    assert not (folder / "evaluation" / "figure3_interpolation_linear.png").exists()
    markdown = (folder / "evaluation" / "report.md").read_text()
    assert "label agreement" in markdown and "unconditional mnist-mlp" in markdown
    printed = capsys.readouterr().out
    assert "label agreement" in printed and "Parzen LL" in printed
