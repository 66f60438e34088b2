"""transformers' GPT-2 API on fastgpt: code written for transformers runs with one import changed.

    from fastgpt.compat.transformers import AutoTokenizer, AutoModelForCausalLM, pipeline

    tokenizer = AutoTokenizer.from_pretrained("distilgpt2")      # bundled GPT-2 vocabulary
    model = AutoModelForCausalLM.from_pretrained("distilgpt2")   # a folder, or the local HF cache
    output = model(input_ids=torch.tensor([tokenizer.encode("The quick brown fox")]))
    next_id = output.logits[0, -1].argmax()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)

What maps where: the models wrap one fastgpt ``Model`` (the forward pass, the KV cache)
and their ``generate`` drives fastgpt's ``Generator``; the tokenizers wrap fastgpt's
byte-level BPE; nothing is downloaded (names resolve to folders, bundled models or the local
Hugging Face cache: ``hub``). Torch tensors in give torch tensors out, NumPy gives NumPy
(``_tensors``); torch and transformers are never imported by this package.

Where pytorch-transformers (the old API) and today's transformers differ, today's wins: the
cache is ``cache`` / ``past_key_values`` (``past=`` is still accepted), labels are
``labels`` (``lm_labels`` is still accepted), ``generate``'s default length is transformers
5's (20 new tokens). Out of scope, with ``OutOfScopeError``: training, gradients, GPUs.
"""

from ._tensors import OutOfScopeError
from .auto import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from .configuration import GPT2Config
from .generation import GenerationConfig
from .legacy import GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP, GPT2_PRETRAINED_MODEL_ARCHIVE_MAP, load_tf_weights_in_gpt2
from .modeling import GPT2DoubleHeadsModel, GPT2LMHeadModel, GPT2Model, GPT2PreTrainedModel
from .outputs import (BaseModelOutputWithPastAndCrossAttentions, CausalLMOutput, CausalLMOutputWithCrossAttentions,
                      GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput, GPT2DoubleHeadsModelOutput,
                      ModelOutput)
from .pipelines import TextGenerationPipeline, pipeline
from .seeding import set_seed
from .tokenization import BatchEncoding, GPT2Tokenizer, GPT2TokenizerFast

__all__ = [
    "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer",
    "BaseModelOutputWithPastAndCrossAttentions", "BatchEncoding", "CausalLMOutput", "CausalLMOutputWithCrossAttentions",
    "GenerateBeamDecoderOnlyOutput", "GenerateDecoderOnlyOutput", "GenerationConfig", "GPT2Config",
    "GPT2DoubleHeadsModel", "GPT2DoubleHeadsModelOutput", "GPT2LMHeadModel", "GPT2Model", "GPT2PreTrainedModel",
    "GPT2_PRETRAINED_CONFIG_ARCHIVE_MAP", "GPT2_PRETRAINED_MODEL_ARCHIVE_MAP", "load_tf_weights_in_gpt2",
    "GPT2Tokenizer", "GPT2TokenizerFast", "ModelOutput", "OutOfScopeError", "TextGenerationPipeline", "pipeline",
    "set_seed",
]
