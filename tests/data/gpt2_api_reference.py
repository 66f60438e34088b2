# The usage examples of the GPT-2 API reference (/work/shared/seeds/003, pytorch-transformers'
# "GPT-2 Models" page), verbatim, one cell each. tests/notebook_runner.py runs them as
# notebook cells; the import line names pytorch_transformers, which the test replaces by
# transformers (the oracle) or fastgpt.compat.transformers.

# In[1]:
from pytorch_transformers import GPT2Model, GPT2Tokenizer
import torch

# Load model and tokenizer
model = GPT2Model.from_pretrained("gpt2")
tokenizer = GPT2Tokenizer.from_pretrained("gpt2")

# Prepare input
text = "The future of artificial intelligence is"
inputs = tokenizer(text, return_tensors="pt")

# Get model outputs
with torch.no_grad():
    outputs = model(**inputs)

# Access representations
last_hidden_state = outputs.last_hidden_state  # Shape: (1, seq_len, 768)
past_key_values = outputs.past_key_values  # For efficient generation

print(f"Hidden state shape: {last_hidden_state.shape}")
print(f"Number of past layers: {len(past_key_values) if past_key_values else 0}")

# In[2]:
from pytorch_transformers import GPT2LMHeadModel, GPT2Tokenizer
import torch

# Load model and tokenizer
model = GPT2LMHeadModel.from_pretrained("gpt2")
tokenizer = GPT2Tokenizer.from_pretrained("gpt2")

# Set pad token
tokenizer.pad_token = tokenizer.eos_token

# Generate text
prompt = "The future of artificial intelligence"
inputs = tokenizer.encode(prompt, return_tensors="pt")

# Generate with different strategies
with torch.no_grad():
    # Greedy generation
    greedy_output = model.generate(
        inputs,
        max_length=50,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id
    )

    # Sampling with temperature
    sample_output = model.generate(
        inputs,
        max_length=50,
        do_sample=True,
        temperature=0.8,
        top_k=50,
        top_p=0.9,
        pad_token_id=tokenizer.eos_token_id
    )

# Decode generated text
greedy_text = tokenizer.decode(greedy_output[0], skip_special_tokens=True)
sample_text = tokenizer.decode(sample_output[0], skip_special_tokens=True)

print(f"Greedy: {greedy_text}")
print(f"Sampled: {sample_text}")

# In[3]:
# (the page's "Text Generation Strategies" snippets use `input_ids` for the prompt above)
input_ids = inputs

# In[4]:
output = model.generate(input_ids, do_sample=False)

# In[5]:
output = model.generate(input_ids, do_sample=True, temperature=0.8)

# In[6]:
output = model.generate(input_ids, do_sample=True, top_k=50)

# In[7]:
output = model.generate(input_ids, do_sample=True, top_p=0.9)

# In[8]:
output = model.generate(
    input_ids,
    do_sample=True,
    temperature=0.8,
    top_k=50,
    top_p=0.9,
    repetition_penalty=1.1
)

# In[9]:
from pytorch_transformers import GPT2Tokenizer

# Load tokenizer
tokenizer = GPT2Tokenizer.from_pretrained("gpt2")

# GPT-2 uses the same token for BOS, EOS, UNK, and PAD
print(f"Special token: {tokenizer.eos_token}")  # <|endoftext|>

# Tokenize text
text = "Hello, how are you today?"
tokens = tokenizer.tokenize(text)
token_ids = tokenizer.encode(text)

print(f"Tokens: {tokens}")
print(f"Token IDs: {token_ids}")

# Decode back
decoded = tokenizer.decode(token_ids)
print(f"Decoded: {decoded}")

# Handle multiple sequences
texts = ["First sentence.", "Second sentence."]
encoded = tokenizer(
    texts,
    padding=True,
    truncation=True,
    return_tensors="pt"
)
print(f"Batch shape: {encoded['input_ids'].shape}")
