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
        'train_loss': [4.667280673980713, 4.5924506187438965, 4.471434116363525, 4.250874996185303, 4.183485507965088, 4.109200477600098, 3.98207950592041, 3.925612449645996, 4.005789279937744, 3.4447619915008545],
        'lr': [0.006666666666666666, 0.01, 0.01, 0.008571428571428572, 0.0071428571428571435, 0.005714285714285714, 0.004285714285714286, 0.002857142857142857, 0.0014285714285714286, 0.0],
    },
    'eval': {
        'eval_loss': [4.111039595170454, 3.7708844271573154],
        'eval_acc': [0.18181818181818182, 0.18181818181818182],
    },
    'final': {'epoch': 1, 'step': 10, 'lr': 0.0, 'train_loss': 3.4447619915008545, 'eval_loss': 3.7708844271573154, 'eval_acc': 0.18181818181818182},
    'progress': {'epoch': 2, 'batch': 0, 'step': 10},
    'weights': {'bert.embeddings.word_embeddings.weight': [-2.235099517929484, 3.5879158635906507], 'bert.embeddings.position_embeddings.weight': [-0.9453913010074757, 0.23801748590940042], 'bert.embeddings.token_type_embeddings.weight': [-0.029380074585787952, 0.0272506433000246], 'bert.embeddings.norm.weight': [15.94139689207077, 15.897324462833193], 'bert.embeddings.norm.bias': [9.300425881519914e-05, 0.00894500127396719], 'bert.blocks.0.attn.qkv.weight': [-0.2156710740237031, 0.6640955651698841], 'bert.blocks.0.attn.qkv.bias': [0.044973366732442344, 0.019482819455453583], 'bert.blocks.0.attn.out.weight': [0.07012838876107708, 0.25212643303635734], 'bert.blocks.0.attn.out.bias': [-0.041962147457525134, 0.008811241382497932], 'bert.blocks.0.norm1.weight': [15.943511247634888, 15.901368322873424], 'bert.blocks.0.norm1.bias': [-0.021153601119294763, 0.008703851398604426], 'bert.blocks.0.fc1.weight': [-1.0964709866675548, 0.8812007196557734], 'bert.blocks.0.fc1.bias': [-0.10733697746763937, 0.027139051502160047], 'bert.blocks.0.fc2.weight': [-0.8160045313416049, 0.8614042501448153], 'bert.blocks.0.fc2.bias': [-0.030709390062838793, 0.00795359196607634], 'bert.blocks.0.norm2.weight': [15.938371658325195, 15.891473326553829], 'bert.blocks.0.norm2.bias': [-0.02247792508569546, 0.008716315395695935], 'bert.blocks.1.attn.qkv.weight': [-0.8012952694843989, 0.7299713841030748], 'bert.blocks.1.attn.qkv.bias': [-0.08751019631703016, 0.01921117565627046], 'bert.blocks.1.attn.out.weight': [-0.2562796070706099, 0.24585782380671156], 'bert.blocks.1.attn.out.bias': [-0.048048910743091255, 0.008111277937936444], 'bert.blocks.1.norm1.weight': [15.933421909809113, 15.881719121782258], 'bert.blocks.1.norm1.bias': [-0.0199514474516036, 0.008665022651808577], 'bert.blocks.1.fc1.weight': [-0.6377158390823752, 0.987130029457604], 'bert.blocks.1.fc1.bias': [-0.011322884587571025, 0.04024648772990141], 'bert.blocks.1.fc2.weight': [-1.0102989961815183, 0.969494442027012], 'bert.blocks.1.fc2.bias': [-0.02999011224892456, 0.007901426713420123], 'bert.blocks.1.norm2.weight': [15.871664702892303, 15.756090928730924], 'bert.blocks.1.norm2.bias': [-0.06100970029365271, 0.006373615545182158], 'mlm_head.bias': [-4.618993979413062, 0.30117970438085206], 'mlm_head.dense.weight': [-0.17001695033104625, 0.24408737311312861], 'mlm_head.dense.bias': [0.014294476248323917, 0.01372763549911074], 'mlm_head.norm.weight': [16.374388813972473, 16.769624824896717], 'mlm_head.norm.bias': [0.09007390402257442, 0.028575365191818265], 'mlm_head.decoder.weight': [-2.235099517929484, 3.5879158635906507]},
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
        'train_loss': [0.7035244305928549, 0.6995075543721517, 0.6910893122355143],
        'val_loss': [0.6859087347984314, 0.6870311498641968, 0.6859429478645325],
        'val_acc': [0.5625, 0.5625, 0.5625],
        'test_loss': [0.6618229150772095, 0.6722264289855957, 0.670782208442688],
        'test_acc': [0.6875, 0.6875, 0.6875],
    },
    'selected_epoch': 0,
    'best_val_acc': 0.5625,
    'selected_test_acc': 0.6875,
    'final_test_acc': 0.6875,
    'steps': 36,
    'confusion': [[0, 5], [0, 11]],
    'weights': {'bert.embeddings.word_embeddings.weight': [-4.188152205977531, 5.120662817986161], 'bert.embeddings.position_embeddings.weight': [-1.3077080033399398, 0.4404165060723536], 'bert.embeddings.token_type_embeddings.weight': [-0.060913286986760795, 0.05776938101429746], 'bert.embeddings.norm.weight': [15.770605444908142, 15.578041492933679], 'bert.embeddings.norm.bias': [0.03731947671622038, 0.03286701702156238], 'bert.blocks.0.attn.qkv.weight': [-0.5396369439549744, 1.890688404830017], 'bert.blocks.0.attn.qkv.bias': [-0.028245577966032442, 0.08684728337126024], 'bert.blocks.0.attn.out.weight': [0.05540971935261041, 0.5352079369341065], 'bert.blocks.0.attn.out.bias': [0.03095896140439436, 0.030734251765668626], 'bert.blocks.0.norm1.weight': [15.799551963806152, 15.630162041625738], 'bert.blocks.0.norm1.bias': [-0.0023333821445703506, 0.032318416892687774], 'bert.blocks.0.fc1.weight': [-0.9573518492979929, 2.635175726128292], 'bert.blocks.0.fc1.bias': [-0.6918389478232712, 0.1909665952081137], 'bert.blocks.0.fc2.weight': [-0.9223743205075152, 2.2729578840558577], 'bert.blocks.0.fc2.bias': [-0.0071077486500144005, 0.034439911948441336], 'bert.blocks.0.norm2.weight': [15.802436649799347, 15.634507030844137], 'bert.blocks.0.norm2.bias': [-0.0038152323104441166, 0.030813062863484005], 'bert.blocks.1.attn.qkv.weight': [-0.6860825631447369, 2.23314365151797], 'bert.blocks.1.attn.qkv.bias': [-0.046511504344323384, 0.11924549356807279], 'bert.blocks.1.attn.out.weight': [0.17031272070016712, 0.5427567098193232], 'bert.blocks.1.attn.out.bias': [0.058461237233132124, 0.027375575496925986], 'bert.blocks.1.norm1.weight': [15.774119436740875, 15.57888056255116], 'bert.blocks.1.norm1.bias': [-0.0015544416382908821, 0.029825115253592306], 'bert.blocks.1.fc1.weight': [-0.2698014155612327, 2.21686826573855], 'bert.blocks.1.fc1.bias': [0.16302875033579767, 0.14350809875408088], 'bert.blocks.1.fc2.weight': [-0.7774413114966592, 2.267913830259902], 'bert.blocks.1.fc2.bias': [-0.015447351848706603, 0.03140003616899828], 'bert.blocks.1.norm2.weight': [15.58971494436264, 15.206197162474698], 'bert.blocks.1.norm2.bias': [-0.18791774986311793, 0.01541299287543397], 'pooler.weight': [-1.5776575893396512, 0.3204031457164368], 'pooler.bias': [0.00968220829963684, 0.010612839126250495], 'classifier.weight': [-0.01443159906193614, 0.029751935401083632], 'classifier.bias': [-2.270098775625229e-09, 9.705831828379882e-07]},
}

if __name__ == "__main__":
    if sys.argv[1:] != ["--print"]:
        sys.exit("usage: python tests/test_golden.py --print   (prints the GOLDEN_* literals to paste above)")
    torch.set_num_threads(1)  # as tests/conftest.py
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # (the loops' own lines)
        runs = {"GOLDEN_PRETRAIN": run_pretrain(Path(tmp)), "GOLDEN_FINETUNE": run_finetune(),
                "GOLDEN_FINETUNE_PRETRAINED": run_finetune(Path(tmp) / "checkpoint.pt")}
    print("\n".join(literal(name, value) for name, value in runs.items()))
