"""Decoding on past a clip that Whisper ended a packed window before.

An upload that stops mid-sentence ("... in the ComfyUI"), packed before other clips, is often
taken for the end of the window: Whisper says end-of-text and the later clips get nothing.
Then the decoder generates again on the encoder output it already has, as Whisper goes on
after a window boundary: the text so far is the previous text, and the first timestamp is
forced to where the skipped clip starts. (Forcing the whole text so far as a prefix would
cost as much as decoding it again: CTranslate2 steps through a prefix token by token.)
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

from whisper_service.quality import Attempt, compression_ratio

TIMESTAMP_SECONDS = 0.02
# Times a packed window is decoded on (each time past one clip).
MAX_CONTINUATIONS = 2

# (window index, previous tokens) -> the prompt to generate from.
PromptFor = Callable[[int, Sequence[int]], List[int]]
# (window indices, prompts each ending in its forced timestamp) -> CTranslate2 results.
Generate = Callable[[List[int], List[List[int]]], list]
# (window index, tokens) -> their text.
TextOf = Callable[[int, Sequence[int]], str]


def skipped_clip_start(tokens: Sequence[int], timestamp_begin: int,
                       clip_starts: Sequence[float]) -> Optional[float]:
    """Where the first clip starts that the decode ended before, if it ended cleanly (on a
    segment's closing timestamp, or on a closing and an opening one with nothing said after
    them, as tiny.en ended a pack after jfk.flac on this project's CI CPU) before a clip that
    it never reached."""
    if not clip_starts or not tokens or tokens[-1] < timestamp_begin:
        return None
    if len(tokens) >= 3 and tokens[-2] >= timestamp_begin and tokens[-3] >= timestamp_begin:
        return None  # only timestamps at the end: no segment closed there
    end = (tokens[-1] - timestamp_begin) * TIMESTAMP_SECONDS
    return next((start for start in clip_starts if start >= end), None)


def continue_past_skips(attempts: List[Attempt], clip_starts: List[List[float]],
                        timestamp_begin: int, eot: int, prompt_for: PromptFor,
                        generate: Generate, text_of: TextOf) -> None:
    """Replace, in `attempts`, each packed window's decode that ended before a later clip
    with the decode continued from that clip (up to MAX_CONTINUATIONS times)."""
    for _ in range(MAX_CONTINUATIONS):
        todo: List[Tuple[int, int]] = []
        for i, attempt in enumerate(attempts):
            start = skipped_clip_start(attempt.tokens, timestamp_begin, clip_starts[i])
            if start is not None:
                todo.append((i, timestamp_begin + int(round(start / TIMESTAMP_SECONDS))))
        if not todo:
            return
        # One batch needs <|startoftranscript|> at one position: the same number of previous
        # tokens everywhere (the most recent ones).
        keep = min(len(attempts[i].tokens) for i, _ in todo)
        by_length: Dict[int, List[Tuple[int, List[int]]]] = {}
        for i, stamp in todo:
            prompt = prompt_for(i, attempts[i].tokens[-keep:]) + [stamp]
            by_length.setdefault(len(prompt), []).append((i, prompt))
        for batch in by_length.values():
            outputs = generate([i for i, _ in batch], [prompt for _, prompt in batch])
            for (i, prompt), out in zip(batch, outputs):
                joined = join(attempts[i], prompt[-1], list(out.sequences_ids[0]),
                              float(out.scores[0]), timestamp_begin, eot,
                              lambda tokens, i=i: text_of(i, tokens))
                if joined is None:
                    clip_starts[i] = []  # nothing said from there on: keep it as it was
                else:
                    attempts[i] = joined


def join(before: Attempt, stamp: int, added: List[int], score: float, timestamp_begin: int,
         eot: int, text_of: Callable[[Sequence[int]], str]) -> Optional[Attempt]:
    """The decode so far followed by a continuation's tokens (after its forced timestamp);
    None when the continuation said nothing."""
    if added[:1] == [stamp]:
        added = added[1:]  # CTranslate2 returns the forced token too
    if not any(t < eot for t in added):
        return None
    # A segment opened and left empty at the end gives way to the forced timestamp.
    head = before.tokens
    if len(head) >= 2 and head[-1] >= timestamp_begin and head[-2] >= timestamp_begin:
        head = head[:-1]
    tokens = head + [stamp] + added
    new_logprob = score * (len(added) + 1) / (len(added) + 2)
    weight = len(before.tokens) / len(tokens)
    return Attempt(tokens, float(weight * before.avg_logprob + (1 - weight) * new_logprob),
                   before.no_speech_prob, compression_ratio(text_of(tokens).strip()),
                   before.temperature)
