"""Builds the tokenizer the harness counts tokens with, locally: nothing comes from a
model hub. A WordLevel tokenizer split on whitespace, one token per word, which is how
orchd's mock counts a prompt and streams its answer (one word a chunk), so the
harness's counts, inter-token latency and time per output token agree with orchd's
`usage`. (A trained BPE split words into pieces and made the inter-token median 0.)

    python build_tokenizer.py OUT_DIR      # needs tokenizers and transformers
"""

import json
import os
import sys

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

out = sys.argv[1]
# The mock's words (engine/src/mock.rs), then common English ones for prompts.
words = """the a model token stream of and to in is orchd shard queue core fast slow data
text time step one two three four five six seven eight nine ten red green blue light dark
north south east west up down left right yes no maybe always never now then here there
this that what why how who when where . , ! ? for on are as with his they at be have from
or had by word but not all were we your can said use an each which she do their if will
other about out many them these so some her would make like him into has look more write
go see number way could people my than first water been call its find long day did get
come made may part over new sound take only little work know place year live me back give
most very after thing our just name good sentence man think say great help through much
before line too mean old any same tell boy follow came want show""".split()
vocab = {"[UNK]": 0, "<|endoftext|>": 1}
for w in words:
    vocab.setdefault(w, len(vocab))
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
PreTrainedTokenizerFast(
    tokenizer_object=tok, unk_token="[UNK]", bos_token="<|endoftext|>",
    eos_token="<|endoftext|>", model_max_length=32768,
).save_pretrained(out)
# transformers 5 names its own class here, which older ones cannot load.
path = os.path.join(out, "tokenizer_config.json")
with open(path) as f:
    cfg = json.load(f)
cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
cfg.pop("backend", None)
with open(path, "w") as f:
    json.dump(cfg, f, indent=2)
loaded = AutoTokenizer.from_pretrained(out)  # as the harness loads it
assert loaded("the model streams", add_special_tokens=False)["input_ids"][:2] == [2, 4]
print("tokenizer:", type(loaded).__name__, len(loaded), "words")
