"""The LLaVA-style multimodal language model on ``transformers``.

CLIP vision tower -> features of layer ``feature_layer`` without CLS -> 2-layer GELU
projector -> spliced into the Mistral input embeddings at the image slot. Kept as three
plain submodules (not ``LlavaForConditionalGeneration``) so the image slot needs no
vocabulary entry and projected image features can be cached and reused across queries.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import CLIPVisionModel, DynamicCache, MistralForCausalLM

from ..config import MediSeeConfig


class LlavaMLLM(nn.Module):
    def __init__(self, config: MediSeeConfig) -> None:
        super().__init__()
        self.feature_layer = config.clip.feature_layer
        self.vision_tower = CLIPVisionModel(config.clip.to_hf())
        hidden = config.text.hidden_size
        self.mm_projector = nn.Sequential(
            nn.Linear(config.clip.hidden_size, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.language_model = MistralForCausalLM(config.text.to_hf())

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) CLIP pixels -> projected patch features (B, num_patches, hidden).

        Only the layers up to ``feature_layer`` run: the last layer's output is never used."""
        vision = self.vision_tower
        x = vision.embeddings(pixel_values.to(self.mm_projector[0].weight.dtype))
        x = vision.pre_layrnorm(x)
        layers = vision.encoder.layers
        keep = len(layers) + 1 + self.feature_layer if self.feature_layer < 0 else self.feature_layer
        for layer in layers[:keep]:
            x = layer(x, None)
            x = x[0] if isinstance(x, tuple) else x
        return self.mm_projector(x[:, 1:])

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-layer states after the final norm, (B, T, H)."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.language_model.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=positions, use_cache=False
        )
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.lm_head(hidden)

    @torch.no_grad()
    def greedy_generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, eos_token_id: int,
        refuse: Callable[[list[int], int], bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Greedy decoding with a KV cache over left-padded prompts.

        Returns generated ids (B, L), the final-layer state that predicted each of them
        (B, L, H) and each token's probability (B, L). Rows that finished are padded with eos.
        ``refuse(row_ids, token)`` may turn down a row's most probable token (a word said
        twice back to back); the most probable of the next ``REFUSAL_CANDIDATES`` it accepts
        is taken instead.
        """
        lm = self.language_model
        cache = DynamicCache(config=lm.config)
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_input = inputs_embeds
        ids, states, probs = [], [], []
        done = torch.zeros(inputs_embeds.shape[0], dtype=torch.bool, device=inputs_embeds.device)
        for _ in range(max_new_tokens):
            out = lm.model(
                inputs_embeds=step_input, attention_mask=mask, position_ids=positions,
                past_key_values=cache, use_cache=True,
            )
            state = out.last_hidden_state[:, -1]
            p = torch.softmax(lm.lm_head(state).float(), dim=-1)
            prob, token = p.max(dim=-1)
            if refuse is not None:
                prob, token = _accepted(p, token, prob, ids, done, refuse)
            token = torch.where(done, torch.full_like(token, eos_token_id), token)
            ids.append(token)
            states.append(state)
            probs.append(prob)
            done = done | (token == eos_token_id)
            if bool(done.all()):
                break
            step_input = lm.get_input_embeddings()(token).unsqueeze(1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
        return torch.stack(ids, 1), torch.stack(states, 1), torch.stack(probs, 1)

    @torch.no_grad()
    def continuation_log_probs(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, continuations: list[list[int]]
    ) -> torch.Tensor:
        """(B, K): the log-probability of each of K token sequences as the continuation of each
        left-padded prompt, after the tokens all K share (whose probability is the same for
        every k, so differences between the K are exact). The prompts and the shared tokens
        run once; their KV cache is repeated for the K remainders, which run in one more pass."""
        lm = self.language_model
        shared = 0
        while all(len(c) > shared + 1 for c in continuations) and len({c[shared] for c in continuations}) == 1:
            shared += 1
        if shared:
            common = torch.tensor(continuations[0][:shared], device=inputs_embeds.device)
            inputs_embeds = torch.cat([inputs_embeds, lm.get_input_embeddings()(common).expand(
                inputs_embeds.shape[0], -1, -1).to(inputs_embeds.dtype)], dim=1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], shared)], dim=1)
            continuations = [c[shared:] for c in continuations]
        batch, count, longest = inputs_embeds.shape[0], len(continuations), max(len(c) for c in continuations)
        device = inputs_embeds.device
        cache = DynamicCache(config=lm.config)
        mask = attention_mask.long()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True)
        ids = torch.zeros(count, longest, dtype=torch.long, device=device)
        valid = torch.zeros(count, longest, dtype=torch.bool, device=device)
        for k, tokens in enumerate(continuations):
            ids[k, : len(tokens)] = torch.tensor(tokens, device=device)
            valid[k, : len(tokens)] = True
        first = torch.log_softmax(lm.lm_head(out.last_hidden_state[:, -1]).float(), dim=-1)  # (B, V)
        total = first.gather(1, ids[:, 0].expand(batch, count))  # (B, K)
        if longest > 1:
            cache.batch_repeat_interleave(count)  # row b * K + k continues prompt b with sequence k
            rows_ids, rows_valid = ids.repeat(batch, 1), valid.repeat(batch, 1)
            step_mask = torch.cat([mask.repeat_interleave(count, 0), rows_valid[:, :-1].long()], dim=1)
            step_positions = positions[:, -1:].repeat_interleave(count, 0) + torch.arange(1, longest, device=device)
            out = lm.model(inputs_embeds=lm.get_input_embeddings()(rows_ids[:, :-1]), attention_mask=step_mask,
                           position_ids=step_positions, past_key_values=cache, use_cache=True)
            later = torch.log_softmax(lm.lm_head(out.last_hidden_state).float(), dim=-1)  # (B*K, S-1, V)
            picked = later.gather(2, rows_ids[:, 1:].unsqueeze(-1))[..., 0] * rows_valid[:, 1:]
            total = total + picked.sum(1).view(batch, count)
        return total


REFUSAL_CANDIDATES = 8


def _accepted(p: torch.Tensor, token: torch.Tensor, prob: torch.Tensor, ids: list[torch.Tensor], done: torch.Tensor,
              refuse: Callable[[list[int], int], bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unfinished row, the most probable token ``refuse`` accepts (of the top few)."""
    token, prob = token.clone(), prob.clone()
    history = torch.stack(ids, 1).tolist() if ids else [[] for _ in range(len(token))]
    for row in range(len(token)):
        if bool(done[row]) or not refuse(history[row], int(token[row])):
            continue
        top_p, top_t = p[row].topk(min(REFUSAL_CANDIDATES, p.shape[-1]))
        for candidate_p, candidate in zip(top_p.tolist(), top_t.tolist()):
            if not refuse(history[row], candidate):
                token[row], prob[row] = candidate, candidate_p
                break
    return prob, token
