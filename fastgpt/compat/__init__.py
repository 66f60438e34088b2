"""Run code written for other GPT-2 implementations on fastgpt by changing one import.

- ``fastgpt.compat.picogpt``: jaymody/picoGPT's ``load_encoder_hparams_and_params``,
  ``gpt2`` and ``generate`` (NumPy params in OpenAI's checkpoint layout).
- ``fastgpt.compat.llms_from_scratch``: Sebastian Raschka's "Build a Large Language Model
  (From Scratch)" ``GPTModel``, ``generate_text_simple`` and ``generate``.
- ``fastgpt.compat.transformers``: (pytorch-)transformers' GPT-2 API: the Auto classes,
  ``pipeline``, ``GPT2Config``, ``GPT2Model`` / ``GPT2LMHeadModel`` / ``GPT2DoubleHeadsModel``
  (full forward, ``generate`` with beam search) and ``GPT2Tokenizer`` / ``GPT2TokenizerFast``.

Each module maps the other library's names and layouts onto fastgpt's own ``Model``,
``Generator`` and ``Tokenizer``: there is no second engine. None of them imports torch,
transformers or TensorFlow (torch only to read a ``.pth`` file, or to give back tensors to a
caller that passed tensors or asked for them).
The submodules are imported on demand, so ``import fastgpt.compat`` costs nothing.
"""

__all__ = ["picogpt", "llms_from_scratch", "transformers"]
