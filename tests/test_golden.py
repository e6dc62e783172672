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
        'train_loss': [4.667290210723877, 4.604971885681152, 4.466029167175293, 4.264808177947998, 4.179539203643799, 4.059593677520752, 3.966912031173706, 3.9276278018951416, 4.001067161560059, 3.443063735961914],
        'lr': [0.006666666666666666, 0.01, 0.01, 0.008571428571428572, 0.0071428571428571435, 0.005714285714285714, 0.004285714285714286, 0.002857142857142857, 0.0014285714285714286, 0.0],
    },
    'eval': {
        'eval_loss': [4.109141263094815, 3.769839893687855],
        'eval_acc': [0.18181818181818182, 0.18181818181818182],
    },
    'final': {'epoch': 1, 'step': 10, 'lr': 0.0, 'train_loss': 3.443063735961914, 'eval_loss': 3.769839893687855, 'eval_acc': 0.18181818181818182},
    'progress': {'epoch': 2, 'batch': 0, 'step': 10},
    'weights': {'bert.embeddings.word_embeddings.weight': [-3.4607609745289665, 3.6283277128918114], 'bert.embeddings.position_embeddings.weight': [-0.6764820207899902, 0.25009802056292374], 'bert.embeddings.token_type_embeddings.weight': [-0.02766218571923673, 0.027490318743781016], 'bert.embeddings.norm.weight': [15.968667924404144, 15.948250119530616], 'bert.embeddings.norm.bias': [0.003859912510961294, 0.008242443366545766], 'bert.blocks.0.attn.qkv.weight': [-0.09364169753098395, 0.6174839851716445], 'bert.blocks.0.attn.qkv.bias': [0.10188130777931903, 0.011425110030524982], 'bert.blocks.0.attn.out.weight': [0.008166529994923621, 0.2584626627814885], 'bert.blocks.0.attn.out.bias': [-0.04136039652803447, 0.008698772476763766], 'bert.blocks.0.norm1.weight': [15.964095711708069, 15.939035441745503], 'bert.blocks.0.norm1.bias': [-0.004381239181384444, 0.009008343367664878], 'bert.blocks.0.fc1.weight': [-1.3008523962562322, 0.8932102520174261], 'bert.blocks.0.fc1.bias': [-0.05766635680265608, 0.03336177699623975], 'bert.blocks.0.fc2.weight': [-0.7145642884497647, 0.8821736686917877], 'bert.blocks.0.fc2.bias': [-0.039526880253106356, 0.00867077565988732], 'bert.blocks.0.norm2.weight': [15.958796083927155, 15.928810969600239], 'bert.blocks.0.norm2.bias': [-0.006066771340556443, 0.00895669535416104], 'bert.blocks.1.attn.qkv.weight': [-0.3512300415459322, 0.8276977298447479], 'bert.blocks.1.attn.qkv.bias': [-0.025860139967875284, 0.019226427387114747], 'bert.blocks.1.attn.out.weight': [-0.43975717085413635, 0.24674919821459243], 'bert.blocks.1.attn.out.bias': [-0.028344641730654985, 0.008440946879703221], 'bert.blocks.1.norm1.weight': [15.95524513721466, 15.921857896952389], 'bert.blocks.1.norm1.bias': [-0.005052546970546246, 0.00885934185082295], 'bert.blocks.1.fc1.weight': [-0.586853920496651, 0.905719527675483], 'bert.blocks.1.fc1.bias': [-0.11116279179987032, 0.029909045524958704], 'bert.blocks.1.fc2.weight': [-0.7876133070676588, 0.944720696625249], 'bert.blocks.1.fc2.bias': [-0.018607557110954076, 0.00847719743756525], 'bert.blocks.1.norm2.weight': [15.894411563873291, 15.79861105277579], 'bert.blocks.1.norm2.bias': [-0.08131574900471605, 0.005993597440990705], 'mlm_head.bias': [-4.61935131624341, 0.3010143090064119], 'mlm_head.dense.weight': [-0.1638444326526951, 0.2504350464981681], 'mlm_head.dense.bias': [0.016110212076455355, 0.013974248301661808], 'mlm_head.norm.weight': [16.34586387872696, 16.712324580629517], 'mlm_head.norm.bias': [0.091028424911201, 0.02775227776332963], 'mlm_head.decoder.weight': [-3.4607609745289665, 3.6283277128918114]},
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
        'train_loss': [0.7026843229929606, 0.6958106358846029, 0.5864553054173788],
        'val_loss': [0.6862289309501648, 0.660834014415741, 0.5062748193740845],
        'val_acc': [0.5625, 0.5625, 1.0],
        'test_loss': [0.6651685833930969, 0.6437664031982422, 0.4995171129703522],
        'test_acc': [0.6875, 0.6875, 1.0],
    },
    'selected_epoch': 2,
    'best_val_acc': 1.0,
    'selected_test_acc': 1.0,
    'final_test_acc': 1.0,
    'steps': 36,
    'confusion': [[5, 0], [0, 11]],
    'weights': {'bert.embeddings.word_embeddings.weight': [-0.6399973693405627, 8.183306010495166], 'bert.embeddings.position_embeddings.weight': [-0.21330090856645256, 0.3821914793781065], 'bert.embeddings.token_type_embeddings.weight': [0.015379109070636332, 0.039207052653912305], 'bert.embeddings.norm.weight': [16.149013698101044, 16.310928033028535], 'bert.embeddings.norm.bias': [0.14127858635038137, 0.02572897152375197], 'bert.blocks.0.attn.qkv.weight': [0.7978091923578177, 5.6144631045271165], 'bert.blocks.0.attn.qkv.bias': [-0.1413817097284209, 0.1875021950515762], 'bert.blocks.0.attn.out.weight': [0.30555633862968534, 1.4212805974899296], 'bert.blocks.0.attn.out.bias': [0.044149958848720416, 0.021393139038280197], 'bert.blocks.0.norm1.weight': [15.937338888645172, 15.893168330988704], 'bert.blocks.0.norm1.bias': [0.07797096413560212, 0.027695886408911664], 'bert.blocks.0.fc1.weight': [-1.5801916453638114, 3.260511408552392], 'bert.blocks.0.fc1.bias': [-0.6384879300603643, 0.09624991233818164], 'bert.blocks.0.fc2.weight': [-2.3522486346337246, 2.571604073870999], 'bert.blocks.0.fc2.bias': [0.13121260213665664, 0.02015744562557946], 'bert.blocks.0.norm2.weight': [15.908258974552155, 15.835632922141347], 'bert.blocks.0.norm2.bias': [0.10785550938453525, 0.024400951952201374], 'bert.blocks.1.attn.qkv.weight': [0.6279348356620176, 3.4602528921085893], 'bert.blocks.1.attn.qkv.bias': [0.32540036872569544, 0.06312010675602023], 'bert.blocks.1.attn.out.weight': [-0.01573411253048107, 1.0698514924711091], 'bert.blocks.1.attn.out.bias': [0.16183997341431677, 0.015900064128258548], 'bert.blocks.1.norm1.weight': [15.827467501163483, 15.679808619120667], 'bert.blocks.1.norm1.bias': [0.09959929529577494, 0.024222428194928397], 'bert.blocks.1.fc1.weight': [-0.9635523666947847, 2.782277961740167], 'bert.blocks.1.fc1.bias': [-0.44096595043083653, 0.0970677437605576], 'bert.blocks.1.fc2.weight': [-0.8431829566980014, 2.4064381431473394], 'bert.blocks.1.fc2.bias': [0.05099607654847205, 0.023437318901693562], 'bert.blocks.1.norm2.weight': [15.520563840866089, 15.076358468143546], 'bert.blocks.1.norm2.bias': [-0.09426389716099948, 0.010151714789133936], 'pooler.weight': [-0.8121731267456198, 0.49385017345929094], 'pooler.bias': [-0.005093754385598004, 0.015017800892725485], 'classifier.weight': [-0.014418928389204666, 0.052859033997750354], 'classifier.bias': [-4.6566128730773926e-09, 0.00012800297750775128]},
}

if __name__ == "__main__":
    if sys.argv[1:] != ["--print"]:
        sys.exit("usage: python tests/test_golden.py --print   (prints the GOLDEN_* literals to paste above)")
    torch.set_num_threads(1)  # as tests/conftest.py
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):  # (the loops' own lines)
        runs = {"GOLDEN_PRETRAIN": run_pretrain(Path(tmp)), "GOLDEN_FINETUNE": run_finetune(),
                "GOLDEN_FINETUNE_PRETRAINED": run_finetune(Path(tmp) / "checkpoint.pt")}
    print("\n".join(literal(name, value) for name, value in runs.items()))
