"""Golden tests: today's exact numbers of MLM pre-training and fine-tuning, pinned (llm.c's expected losses).

Why: `pretrain()` and the fine-tuning loop are about to be split into smaller units. A pure refactor must not move
a single number, and these tests prove it: a tiny fixed-seed fp32 CPU run of each loop, compared with values
recorded from the code as it was.

Pinned, on a 2-layer model with dropout 0.1 (so the dropout RNG stream is covered):
  * pre-training (2 epochs, warmup + linear decay): every step's logged train loss and lr; eval loss/acc of both
    epochs (metrics.csv) and the returned final row; the final checkpoint's progress and a fingerprint of its
    weights (per tensor: float64 sum and sum of squares). The same values must come out of a run that is
    interrupted mid-epoch (KeyboardInterrupt after a checkpoint_every save) and resumed.
  * fine-tuning (3 epochs) from random init and from the pre-training run's checkpoint: the per-epoch curve,
    the selection (epoch, accuracies, confusion matrix) and a fingerprint of the final (selected) weights.

Tolerances: the lr is compared exactly (pure arithmetic on the schedule, no kernels involved). Everything else
with rel 1e-5 (abs 1e-7 for sums near zero): on one machine and torch version the runs are bit-exact, but another
CPU's BLAS kernels (or another thread count: run with one, as tests/conftest.py does) may round the last bits
differently, and that drift stays far below 1e-5 over these few dozen steps, while a real change (an lr, a mask,
a dropout draw, an optimiser setting) moves these numbers by much more.

THE RULE: a change that moves these numbers must say why in its commit. To re-record them after a deliberate
change: `python tests/test_golden.py --print`, paste the printed literals over the GOLDEN_* below, and commit
with a message that explains the change in numbers.
"""

import contextlib
import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

if __name__ == "__main__":  # run as a script: import this checkout's tinybert, not an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinybert.checkpoint import load_checkpoint
from tinybert.config import ModelConfig
from tinybert.finetune import EncodedExamples, FinetuneConfig, build_classifier, finetune
from tinybert.model import BertForMaskedLM
from tinybert.pretrain import MLMData, PretrainConfig, RunOptions, pretrain
from tinybert.runtime import choose_precision, seed_everything

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 100)]
PAD, CLS, SEP, MASK = 0, 2, 3, 4
MODEL = ModelConfig(vocab_size=len(VOCAB), layers=2, heads=2, head_size=8, max_position=16, dropout=0.1,
                    attention_dropout=0.1, pad_id=PAD)
# 40 rows / batch 8 = 5 steps per epoch, 10 in all; a checkpoint every 3 steps (time-based ones off: deterministic)
PRE = PretrainConfig(epochs=2, batch_size=8, lr=1e-2, warmup_steps=3, schedule="linear", seed=7, log_every=1,
                     checkpoint_every=3, checkpoint_minutes=0)
INTERRUPT_AT = 8  # the interrupted run stops when step 8 is logged; it resumes from step 6's save (epoch 1, batch 1)
FT = FinetuneConfig(epochs=3, batch_size=4, lr=1e-2, warmup_steps=2, max_length=16, seed=5, log_every=1)
FT_INIT_SEED = 11  # seed_everything before build_classifier, as eval.py's run_seed does
CPU = torch.device("cpu")
FP32 = choose_precision("fp32", CPU)


def token_rows(rows: int, seed: int) -> np.ndarray:
    """[CLS] w.. [SEP] [PAD].. rows of 6-16 tokens; words from a skewed distribution (some padding in most rows)."""
    rng = np.random.default_rng(seed)
    out = np.full((rows, MODEL.max_position), PAD, dtype=np.uint16)
    for r in range(rows):
        n = int(rng.integers(4, MODEL.max_position - 1))
        out[r, 0], out[r, n + 1] = CLS, SEP
        out[r, 1:n + 1] = 5 + np.minimum(rng.zipf(1.3, size=n) - 1, len(VOCAB) - 6)
    return out


def examples(n: int, seed: int) -> EncodedExamples:
    """Label l's rows: 2-10 words from its own half of w10..w99, with the marker word 5 + l inserted twice."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = [int(w) for w in rng.integers(10 + 45 * label, 55 + 45 * label, size=int(rng.integers(2, 11)))]
        for _ in range(2):
            words.insert(int(rng.integers(len(words) + 1)), 5 + label)
        ids.append([CLS] + words + [SEP])
        labels.append(label)
    return EncodedExamples(ids, labels)


def fingerprint(state: dict) -> dict:
    """name -> [sum, sum of squares] in float64: a compact, order-sensitive summary of every tensor."""
    return {k: [float(v.double().sum()), float(v.double().square().sum())] for k, v in state.items()}


def run_pretrain(out: Path, interrupt_at: int | None = None) -> dict:
    log = []

    def start(resume, stop_at=None):
        def on_log(rec):
            if rec["step"] == stop_at:
                raise KeyboardInterrupt
            log.append(rec)
        seed_everything(PRE.seed)  # as train.py does before building the model
        return pretrain(BertForMaskedLM(MODEL), MLMData(VOCAB, MASK, PAD, token_rows(40, 1), token_rows(16, 2)), PRE,
                        RunOptions(out, CPU, FP32, resume=resume, show_progress=False, on_log=on_log))

    if interrupt_at is None:
        final = start(resume=False)
    else:
        with pytest.raises(KeyboardInterrupt):
            start(resume=False, stop_at=interrupt_at)
        assert load_checkpoint(out / "checkpoint.pt")["progress"] == {"epoch": 1, "batch": 1, "step": 6}
        lost = log[6:]  # steps after the checkpoint: the resumed run does them again, and identically
        del log[6:]
        final = start(resume=True)
        assert log[6:6 + len(lost)] == lost
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    ckpt = load_checkpoint(out / "checkpoint.pt", kind="mlm")
    return {"log": {k: [rec[k] for rec in log] for k in ("epoch", "step", "train_loss", "lr")},
            "eval": {k: [float(r[k]) for r in rows] for k in ("eval_loss", "eval_acc")},
            "final": {k: final[k] for k in ("epoch", "step", "lr", "train_loss", "eval_loss", "eval_acc")},
            "progress": ckpt["progress"], "weights": fingerprint(ckpt["model"])}


def run_finetune(checkpoint=None) -> dict:
    seed_everything(FT_INIT_SEED)
    model, _ = build_classifier(checkpoint, MODEL if checkpoint is None else None, 2)
    res = finetune(model, examples(48, 1), examples(16, 2), examples(16, 3), FT, CPU, FP32, show_progress=False)
    return {"curve": {k: [row[k] for row in res["curve"]]
                      for k in ("lr", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc")},
            **{k: res[k] for k in ("selected_epoch", "best_val_acc", "selected_test_acc", "final_test_acc",
                                   "steps", "confusion")},
            "weights": fingerprint(model.state_dict())}


def assert_matches(got, want, where="golden", exact=False):
    """Nested comparison: keys, lengths, ints exactly; floats exactly under a key 'lr', else rel 1e-5."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_matches(got[k], want[k], f"{where}.{k}", exact or k == "lr")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_matches(g, w, f"{where}[{i}]", exact)
    elif isinstance(want, float) and not exact:
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), f"{where}: {got!r} != {want!r}"
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden_pretrain")
    return run_pretrain(out), out / "checkpoint.pt"


def test_pretrain_golden(pretrained):
    assert_matches(pretrained[0], GOLDEN_PRETRAIN)


def test_pretrain_interrupted_and_resumed_golden(tmp_path):
    assert_matches(run_pretrain(tmp_path, interrupt_at=INTERRUPT_AT), GOLDEN_PRETRAIN)


def test_finetune_golden():
    assert_matches(run_finetune(), GOLDEN_FINETUNE)


def test_finetune_from_pretrained_golden(pretrained):
    assert_matches(run_finetune(pretrained[1]), GOLDEN_FINETUNE_PRETRAINED)


def literal(name: str, value: dict) -> str:
    """`NAME = {...}` with one line per key (and per column of a nested dict of lists); floats as repr."""
    lines = [f"{name} = {{"]
    for k, v in value.items():
        if isinstance(v, dict) and all(isinstance(x, list) for x in v.values()) and k != "weights":
            lines += [f"    {k!r}: {{"] + [f"        {c!r}: {x!r}," for c, x in v.items()] + ["    },"]
        else:
            lines.append(f"    {k!r}: {v!r},")
    return "\n".join(lines + ["}"])


# ---- recorded with `python tests/test_golden.py --print` (torch 2.13.0+cpu, 1 thread) -----------------------
GOLDEN_PRETRAIN = {
    'log': {
        'epoch': [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
        'step': [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        'train_loss': [4.667169570922852, 4.606354713439941, 4.465426445007324, 4.264101982116699, 4.178438663482666, 4.06000280380249, 3.969130039215088, 3.9265544414520264, 4.002099514007568, 3.4420416355133057],
        'lr': [0.006666666666666666, 0.01, 0.01, 0.008571428571428572, 0.0071428571428571435, 0.005714285714285714, 0.004285714285714286, 0.002857142857142857, 0.0014285714285714286, 0.0],
    },
    'eval': {
        'eval_loss': [4.109315352006392, 3.7694136879660864],
        'eval_acc': [0.18181818181818182, 0.18181818181818182],
    },
    'final': {'epoch': 1, 'step': 10, 'lr': 0.0, 'train_loss': 3.4420416355133057, 'eval_loss': 3.7694136879660864, 'eval_acc': 0.18181818181818182},
    'progress': {'epoch': 2, 'batch': 0, 'step': 10},
    'weights': {'bert.embeddings.word_embeddings.weight': [-3.37839439909294, 3.6318121767092126], 'bert.embeddings.position_embeddings.weight': [-0.6099562317540403, 0.24854965569467627], 'bert.embeddings.token_type_embeddings.weight': [-0.029372954042628407, 0.027646051056745218], 'bert.embeddings.norm.weight': [15.967851281166077, 15.946812849902727], 'bert.embeddings.norm.bias': [0.002887522103264928, 0.0083106188529028], 'bert.blocks.0.attn.qkv.weight': [-0.1405763885268243, 0.6235823493483501], 'bert.blocks.0.attn.qkv.bias': [0.09768271030006126, 0.011572608978961767], 'bert.blocks.0.attn.out.weight': [0.013424038494122215, 0.25961503233315686], 'bert.blocks.0.attn.out.bias': [-0.04234747060399968, 0.00866134638288976], 'bert.blocks.0.norm1.weight': [15.963035106658936, 15.93709836391453], 'bert.blocks.0.norm1.bias': [-0.004930688533931971, 0.009066873496162225], 'bert.blocks.0.fc1.weight': [-1.2863819469203008, 0.892262611951407], 'bert.blocks.0.fc1.bias': [-0.039102516311686486, 0.03374034918948332], 'bert.blocks.0.fc2.weight': [-0.7362565559869836, 0.8827117214958394], 'bert.blocks.0.fc2.bias': [-0.041413675993680954, 0.008768744245064023], 'bert.blocks.0.norm2.weight': [15.957679212093353, 15.926744364613842], 'bert.blocks.0.norm2.bias': [-0.006659147911705077, 0.009013515424644509], 'bert.blocks.1.attn.qkv.weight': [-0.5882261694059707, 0.8393882242935802], 'bert.blocks.1.attn.qkv.bias': [-0.045097501721182987, 0.019611753062928082], 'bert.blocks.1.attn.out.weight': [-0.10563057172112167, 0.2461837980424297], 'bert.blocks.1.attn.out.bias': [-0.017502801289083436, 0.00830040399316382], 'bert.blocks.1.norm1.weight': [15.953393280506134, 15.918303449578826], 'bert.blocks.1.norm1.bias': [-0.0056459500920027494, 0.008911446416139083], 'bert.blocks.1.fc1.weight': [-0.7698393660393776, 0.9084645311561519], 'bert.blocks.1.fc1.bias': [-0.0793187579838559, 0.030878438228842578], 'bert.blocks.1.fc2.weight': [-0.795123599251383, 0.9517204141317389], 'bert.blocks.1.fc2.bias': [-0.0077343410812318325, 0.008344960467775575], 'bert.blocks.1.norm2.weight': [15.893710851669312, 15.797341276283042], 'bert.blocks.1.norm2.bias': [-0.08158971095690504, 0.0060443985481656234], 'mlm_head.bias': [-4.6192969609983265, 0.3010254868092029], 'mlm_head.dense.weight': [-0.16098698272980982, 0.2501407751820549], 'mlm_head.dense.bias': [0.01732406485825777, 0.014023003892202825], 'mlm_head.norm.weight': [16.343846678733826, 16.708214201609096], 'mlm_head.norm.bias': [0.09018374932929873, 0.027693272450878395], 'mlm_head.decoder.weight': [-3.37839439909294, 3.6318121767092126]},
}
GOLDEN_FINETUNE = {
    'curve': {
        'lr': [0.005, 0.007058823529411765, 0.0035294117647058825],
        'train_loss': [0.7014624277750651, 0.6139842669169108, 0.29427582025527954],
        'val_loss': [0.6873717308044434, 0.42154425382614136, 0.21269114315509796],
        'val_acc': [0.5625, 1.0, 1.0],
        'test_loss': [0.6775141358375549, 0.41585153341293335, 0.21046032011508942],
        'test_acc': [0.6875, 1.0, 1.0],
    },
    'selected_epoch': 1,
    'best_val_acc': 1.0,
    'selected_test_acc': 1.0,
    'final_test_acc': 1.0,
    'steps': 36,
    'confusion': [[5, 0], [0, 11]],
    'weights': {'bert.embeddings.word_embeddings.weight': [-0.8473494831268908, 3.950612647448104], 'bert.embeddings.position_embeddings.weight': [0.25348885845960467, 0.3032159099026876], 'bert.embeddings.token_type_embeddings.weight': [0.21935013262555003, 0.02525071702400429], 'bert.embeddings.norm.weight': [15.769250214099884, 15.5663206795852], 'bert.embeddings.norm.bias': [0.2444827975705266, 0.022360864607290663], 'bert.blocks.0.attn.qkv.weight': [0.03423702594591305, 3.7511673587021783], 'bert.blocks.0.attn.qkv.bias': [0.2557789581621819, 0.11509497547649902], 'bert.blocks.0.attn.out.weight': [-0.3315701145911589, 1.6749848271394847], 'bert.blocks.0.attn.out.bias': [0.15217263903468847, 0.02640875770723384], 'bert.blocks.0.norm1.weight': [15.753481388092041, 15.531527103967136], 'bert.blocks.0.norm1.bias': [0.14094403758645058, 0.02654507851084579], 'bert.blocks.0.fc1.weight': [-0.3168044463673141, 2.6698077118044967], 'bert.blocks.0.fc1.bias': [-0.20770541671663523, 0.046788423513391214], 'bert.blocks.0.fc2.weight': [2.908380798617145, 2.4806854575046264], 'bert.blocks.0.fc2.bias': [0.09561135806143284, 0.023740610921674215], 'bert.blocks.0.norm2.weight': [15.848913967609406, 15.718168896451456], 'bert.blocks.0.norm2.bias': [0.1359280502074398, 0.020109030278364557], 'bert.blocks.1.attn.qkv.weight': [-0.250915497133974, 3.3802130286223635], 'bert.blocks.1.attn.qkv.bias': [0.14922846212812146, 0.06675233797597482], 'bert.blocks.1.attn.out.weight': [0.39534415618982166, 1.6685839995004976], 'bert.blocks.1.attn.out.bias': [0.1592882229015231, 0.01496039062963932], 'bert.blocks.1.norm1.weight': [15.751264452934265, 15.537353514917477], 'bert.blocks.1.norm1.bias': [0.17958859913051128, 0.022147890850436888], 'bert.blocks.1.fc1.weight': [1.511966071644565, 3.6620620739909366], 'bert.blocks.1.fc1.bias': [0.34132746583782136, 0.03499174603583183], 'bert.blocks.1.fc2.weight': [-0.8973084386088885, 2.6751641840698444], 'bert.blocks.1.fc2.bias': [0.06442429882008582, 0.011935198912303643], 'bert.blocks.1.norm2.weight': [15.913958191871643, 15.850172133961578], 'bert.blocks.1.norm2.bias': [0.1016337014734745, 0.019285738507148723], 'pooler.weight': [-0.5708086273516528, 0.6643027879880203], 'pooler.bias': [-0.17018327297409996, 0.007811543672441653], 'classifier.weight': [-0.014422181295230985, 0.052534108943348], 'classifier.bias': [-6.51925802230835e-09, 0.00027832511103172575]},
}
GOLDEN_FINETUNE_PRETRAINED = {
    'curve': {
        'lr': [0.005, 0.007058823529411765, 0.0035294117647058825],
        'train_loss': [0.7033093770345052, 0.6995048522949219, 0.6742492516835531],
        'val_loss': [0.6866099834442139, 0.6832678318023682, 0.6522941589355469],
        'val_acc': [0.5625, 0.5625, 0.5625],
        'test_loss': [0.6676156520843506, 0.6693257689476013, 0.6376972794532776],
        'test_acc': [0.6875, 0.6875, 0.6875],
    },
    'selected_epoch': 0,
    'best_val_acc': 0.5625,
    'selected_test_acc': 0.6875,
    'final_test_acc': 0.6875,
    'steps': 36,
    'confusion': [[0, 5], [0, 11]],
    'weights': {'bert.embeddings.word_embeddings.weight': [-4.0821319104288705, 5.224687699623759], 'bert.embeddings.position_embeddings.weight': [-0.8734870839398354, 0.4423771550573036], 'bert.embeddings.token_type_embeddings.weight': [-0.018330174149014056, 0.05517657689544911], 'bert.embeddings.norm.weight': [15.784070551395416, 15.602860155702931], 'bert.embeddings.norm.bias': [0.0835691267857328, 0.028108205241299256], 'bert.blocks.0.attn.qkv.weight': [0.43924144943594, 1.4527815703837206], 'bert.blocks.0.attn.qkv.bias': [0.061698542933786626, 0.04674235616893306], 'bert.blocks.0.attn.out.weight': [0.07534735280205496, 0.50820427508909], 'bert.blocks.0.attn.out.bias': [0.023930814932100475, 0.029557498005057786], 'bert.blocks.0.norm1.weight': [15.78582513332367, 15.604497686383887], 'bert.blocks.0.norm1.bias': [0.032329095993191004, 0.02872264892630331], 'bert.blocks.0.fc1.weight': [-2.1759038378222613, 2.4415502551780284], 'bert.blocks.0.fc1.bias': [-0.4565239466028288, 0.15899512592994236], 'bert.blocks.0.fc2.weight': [-1.3601825289661065, 1.9732740249294423], 'bert.blocks.0.fc2.bias': [0.035840638214722276, 0.028063283150302355], 'bert.blocks.0.norm2.weight': [15.770107090473175, 15.574338669221785], 'bert.blocks.0.norm2.bias': [0.01735622761771083, 0.028531647216285753], 'bert.blocks.1.attn.qkv.weight': [-0.3547002704872284, 1.6949513648118995], 'bert.blocks.1.attn.qkv.bias': [0.1839290191687084, 0.05861700588577324], 'bert.blocks.1.attn.out.weight': [0.573115918901749, 0.4439065144833944], 'bert.blocks.1.attn.out.bias': [0.09973470494151115, 0.025909090688871164], 'bert.blocks.1.norm1.weight': [15.73935604095459, 15.513899032677223], 'bert.blocks.1.norm1.bias': [0.02917481306940317, 0.028124817175041856], 'bert.blocks.1.fc1.weight': [-1.117362294899067, 2.0532911430517653], 'bert.blocks.1.fc1.bias': [0.17547140130773187, 0.10381840318293194], 'bert.blocks.1.fc2.weight': [-0.5469912031549029, 1.9510018681102634], 'bert.blocks.1.fc2.bias': [0.0230443156324327, 0.029154085359635203], 'bert.blocks.1.norm2.weight': [15.537522196769714, 15.106291130823529], 'bert.blocks.1.norm2.bias': [-0.14268089272081852, 0.011700085564676912], 'pooler.weight': [-1.3226776190567762, 0.29215612313173545], 'pooler.bias': [0.013211225857958198, 0.011051847421140206], 'classifier.weight': [-0.014431648422032595, 0.030351575255069575], 'classifier.bias': [-3.6088749766349792e-09, 3.4686018527207925e-06]},
}

if __name__ == "__main__":
    if sys.argv[1:] != ["--print"]:
        sys.exit("usage: python tests/test_golden.py --print   (prints the GOLDEN_* literals to paste above)")
    torch.set_num_threads(1)  # as tests/conftest.py
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # (the loops' own lines)
        runs = {"GOLDEN_PRETRAIN": run_pretrain(Path(tmp)), "GOLDEN_FINETUNE": run_finetune(),
                "GOLDEN_FINETUNE_PRETRAINED": run_finetune(Path(tmp) / "checkpoint.pt")}
    print("\n".join(literal(name, value) for name, value in runs.items()))
