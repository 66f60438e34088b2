# The code cells of the distilgpt2 "Language Generation with Transformers" notebook
# (/work/shared/seeds/001), verbatim, followed by the pipeline cell quoted in issue 14.
# tests/notebook_runner.py runs them as Jupyter does, one cell at a time, recording each
# cell's last expression as its Out[n].

# In[1]:
from transformers import AutoTokenizer, AutoModelForCausalLM
import torch # We'll load Pytorch so we can convert a list to a tensor
from scipy.special import softmax
import numpy as np # We're using numpy to use its argmax function
import random
from transformers import pipeline

# In[2]:
text = 'The quick brown fox jumped over'

# In[3]:
tokenizer = AutoTokenizer.from_pretrained('distilgpt2')
model = AutoModelForCausalLM.from_pretrained('distilgpt2')

# In[4]:
input_ids = tokenizer.encode(text)
input_ids

# In[5]:
tokenizer.decode(input_ids)

# In[6]:
as_tensor = torch.tensor(input_ids).reshape(1,-1) # This converts the token ID list to a tensor
output = model(input_ids=as_tensor) # We pass it into the model
next_token_scores = output.logits[0,-1,:].detach().numpy() # We get the scores for next token and the end of the sequence (token index=-1)
next_token_probs = softmax(next_token_scores) # And we apply a softmax function

next_token_probs.shape

# In[7]:
next_token_id = next_token_probs.argmax()
next_token_id

# In[8]:
tokenizer.decode(next_token_id)

# In[9]:
def probability_generator(input_ids_, model_):
    output_ = model_(input_ids=input_ids_)
    next_token_scores_ = output_.logits[0,-1,:].detach().numpy() # We get the scores for next token and the end of the sequence (token index=-1)
    return softmax(next_token_scores_) # And we apply a softmax function

def greedy_ids_generator(input_ids_, model_, n=8):
    for i in range(n):
        next_token_probs_ = probability_generator(input_ids_, model_)
        next_token_id_ = next_token_probs_.argmax() # Get the token ID with the highest probability
        input_ids_ = torch.cat((input_ids_, torch.tensor([next_token_id_]).reshape(1,-1)), dim=1) # Add the new token ID to the input IDs
    return input_ids_

tensor_modified = torch.cat((as_tensor, torch.tensor([1353]).reshape(1,-1)), dim=1)
greedy_generated = greedy_ids_generator(as_tensor, model)
greedy_generated_modified = greedy_ids_generator(tensor_modified, model)

# In[10]:
tokenizer.decode(token_ids=greedy_generated[0, :].tolist())

# In[11]:
tokenizer.decode(token_ids=greedy_generated_modified[0, :].tolist())

# In[12]:
next_token_probs = np.array([0.1, 0.2, 0.5, 0.3])

# In[13]:
next_token_probs.argmax()

# In[14]:
indices = list(range(len(next_token_probs)))
indices

# In[15]:
next_token_id = random.choices(indices, k=1)[0]
next_token_id

# In[16]:
next_token_id = random.choices(indices, k=1, weights=next_token_probs)[0]
next_token_id

# In[17]:
def sampling_generator(input_ids_, model_, n=8):
    for i in range(n):
        next_token_probs_ = probability_generator(input_ids_, model_)
        indices_ = list(range(len(next_token_probs_)))
        next_token_id_ = random.choices(indices_, k=1, weights=next_token_probs_)[0] # Get the token ID with the highest probability
        input_ids_ = torch.cat((input_ids_, torch.tensor([next_token_id_]).reshape(1,-1)), dim=1) # Add the new token ID to the input IDs
    return input_ids_

sampling_generated = sampling_generator(as_tensor, model)
sampling_generated_modified = sampling_generator(tensor_modified, model)

# In[18]:
tokenizer.decode(token_ids=sampling_generated[0, :].tolist())

# In[19]:
tokenizer.decode(token_ids=sampling_generated_modified[0, :].tolist())

# In[20]:
generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
generator("The quick brown fox", max_new_tokens=30, num_return_sequences=5)
