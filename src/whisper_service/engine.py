"""The batched Whisper engine: many windows from many requests in one encode and one generate.

faster-whisper's WhisperModel provides the CTranslate2 model, tokenizer and word alignment;
this module decides how windows are grouped. Windows that share beam size and temperature are
encoded together and generated together, each with its own prompt (language, task, prompt
text, hotwords); language detection and word alignment run on the same encoder output.
Windows whose text looks wrong (repetitive or improbable) are decoded again together at the
next temperature, as faster-whisper does one window at a time.
"""

from __future__ import annotations

import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from whisper_service import packing
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions
from whisper_service.segments import split_by_timestamps
from whisper_service.settings import ModelSettings

log = logging.getLogger(__name__)

# faster-whisper's defaults for transcribe(), kept so that quality matches it.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
TEMPERATURE_STEP = 0.2
BEST_OF = 5
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s
TIMESTAMP_SECONDS = 0.02
TIMESTAMP_INDEX_LIMIT = 1500  # <|30.00|>: a continuation's forced first timestamp may be anywhere
# Times a packed window is decoded on past a clip Whisper ended before (each time one clip).
MAX_CONTINUATIONS = 2
# Languages (most probable first) reported per window whose language was detected.
LANGUAGES_REPORTED = 5
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"

WindowOutcome = Union[dict, Exception]


@dataclass
class _Decoded:
    tokens: List[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def temperature_schedule(first: float) -> List[float]:
    """The first temperature, then fallbacks up to 1.0 in steps of 0.2."""
    schedule = [first]
    step = 1
    while round(first + step * TEMPERATURE_STEP, 4) <= 1.0 + 1e-9:
        schedule.append(round(first + step * TEMPERATURE_STEP, 4))
        step += 1
    return schedule


class WhisperEngine:
    def __init__(self, settings: ModelSettings, device_index: int = 0, pack_windows: bool = True):
        self.settings = settings
        self.pack_windows = pack_windows
        self.model = WhisperModel(
            settings.model_path,
            device=settings.device,
            device_index=device_index,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.cpu_workers,
            download_root=settings.download_root,
        )
        self._pool = ThreadPoolExecutor(settings.cpu_workers, thread_name_prefix="ct2-worker")
        self.multilingual = self.model.model.is_multilingual
        self.n_mels = self.model.model.n_mels
        self._tokenizers: Dict[Tuple[str, str], Tokenizer] = {}
        base = self.tokenizer("en", "transcribe")
        self.timestamp_begin = base.timestamp_begin
        self.eot = base.eot
        self.suppress_tokens = _suppressed_tokens(base)

    def tokenizer(self, language: str, task: str) -> Tokenizer:
        key = (language, task)
        if key not in self._tokenizers:
            self._tokenizers[key] = Tokenizer(
                self.model.hf_tokenizer, self.multilingual, task=task, language=language
            )
        return self._tokenizers[key]

    def release(self) -> None:
        """Free the model's memory now (host and GPU), not when the GC gets to it."""
        model = getattr(self, "model", None)
        if model is not None:
            model.model.unload_model()
            self.model = None

    def warm_up(self, windows: int) -> None:
        """Touch every stage once (encode, language detection, generation, alignment) on silence.

        Generation is cut to a few tokens: Whisper on silence can babble up to the length
        limit at every fallback temperature, which would only make loading slow.
        """
        features = np.zeros((windows, self.n_mels, 3000), dtype=np.float32)
        encoder_output = self.model.encode(features)
        if self.multilingual:
            self.model.model.detect_language(encoder_output)
        prompt = self._prompt(self.tokenizer("en", "transcribe"), DecodeOptions())
        self.model.model.generate(encoder_output, [prompt] * windows, beam_size=5,
                                  max_length=len(prompt) + 4, return_scores=True,
                                  return_no_speech_prob=True)

    # ----------------------------------------------------------------- the batch entry point
    def transcribe_windows(
        self,
        features: np.ndarray,
        num_frames: Sequence[int],
        options: Sequence[DecodeOptions],
        workers: Optional[int] = None,
    ) -> List[WindowOutcome]:
        """One outcome per window: a result dict in window time, or the exception it raised.

        Short windows are packed (see packing); when Whisper ends a packed window before a
        later clip, decoding goes on from that clip on the same encoder output. A packed window
        whose text is improbable, or whose words run across clips, gives its clips back to be
        decoded alone; a clip that still comes back empty is packed once more with the other
        such clips, then decoded alone; all in this same batch rather than in another round
        trip through the front.

        On the CPU the packed windows are shared among `workers` (default: all the engine's
        workers), and each worker settles what its windows give back on its own: no worker
        waits for another between rounds.
        """
        outcomes: List[Optional[WindowOutcome]] = [self._unsupported(o) for o in options]
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        workers = self.settings.cpu_workers if workers is None else max(1, workers)
        units = self._packed_units(features, num_frames, options, todo, workers)
        shares = _balanced(units, min(workers, len(units)))
        if len(shares) <= 1:
            self._settle(units, features, num_frames, options, outcomes)
        else:
            jobs = [self._pool.submit(self._settle, [units[i] for i in share], features,
                                      num_frames, options, outcomes) for share in shares]
            for job in jobs:
                job.result()
        return outcomes  # type: ignore[return-value]

    def _settle(self, units: List["_Unit"], features, num_frames, options,
                outcomes: List[Optional[WindowOutcome]]) -> None:
        """Decode units in this thread, and what they give back, until every clip has its
        outcome (written at the clip's own index: threads never share an index)."""
        for packing_round in range(3):
            to_pack: List[int] = []
            alone: List[int] = []
            for unit, outcome in zip(units, self._decode(units)):
                if len(unit.members) == 1:
                    outcomes[unit.members[0]] = outcome
                    continue
                kept, skipped = self._split_packed(unit, outcome, num_frames, options)
                for i, result in kept.items():
                    outcomes[i] = result
                alone.extend(i for i in unit.members if i not in kept and i not in skipped)
                (to_pack if packing_round == 0 else alone).extend(skipped)
            if not to_pack and not alone:
                return
            units = self._packed_units(features, num_frames, options, to_pack, 1) if to_pack else []
            units += [self._alone(features, num_frames, options, i) for i in sorted(alone)]

    def _packed_units(self, features, num_frames, options, indices: List[int], workers: int
                      ) -> List["_Unit"]:
        # Copies of one recording are kept apart; compared in place (no copy of the batch).
        alike = packing.look_alike(features, num_frames)
        packs = packing.plan([num_frames[i] for i in indices],
                             [self._pack_key(options[i]) for i in indices],
                             alike=lambda a, b: alike(indices[a], indices[b]))
        if self.settings.device == "cpu":
            packs = packing.spread(packs, workers)
        units = []
        for pack in packs:
            # Longest clip first, shortest last (measured on the bench recordings: Whisper
            # ends a window early after a short clip cut mid-sentence less often when nothing
            # follows it).
            group = sorted((indices[j] for j in pack), key=lambda i: -num_frames[i])
            if len(group) == 1:
                units.append(self._alone(features, num_frames, options, group[0]))
                continue
            clip_frames = [num_frames[i] for i in group]
            packed, content = packing.pack_features(features[group], clip_frames)
            # One temperature only: a packed window whose text looks wrong is not sampled
            # again; its clips are decoded alone instead, with the usual fallback.
            words = any(options[i].word_timestamps for i in group)
            units.append(_Unit(packed, content, replace(options[group[0]], word_timestamps=words),
                               False, group, clip_frames))
        return units

    def _split_packed(self, unit: "_Unit", outcome: WindowOutcome, num_frames, options
                      ) -> Tuple[Dict[int, dict], List[int]]:
        """(results kept per clip, clips that came back empty); the rest go alone."""
        frames = [num_frames[i] for i in unit.members]
        if (isinstance(outcome, Exception) or _packed_needs_fallback(outcome)
                or packing.straddling_words(outcome, frames)):
            return {}, []
        kept, skipped = {}, []
        split = packing.split_result(outcome, frames,
                                     [options[i].word_timestamps for i in unit.members])
        for i, result in zip(unit.members, split):
            # Repetition is judged clip by clip: uploads of one sentence packed together
            # make a repetitive window, not a bad transcript.
            text = "".join(seg["text"] for seg in result["segments"]).strip()
            result["compression_ratio"] = compression_ratio(text)
            if not result["segments"]:
                skipped.append(i)
            elif result["compression_ratio"] <= COMPRESSION_RATIO_THRESHOLD:
                kept[i] = result
        return kept, skipped

    @staticmethod
    def _alone(features, num_frames, options, index: int) -> "_Unit":
        return _Unit(features[index], num_frames[index], options[index], True, [index])

    def _pack_key(self, opts: DecodeOptions):
        """Windows with equal keys may share one packed window (None: never packed).

        Packed clips share one language, so only windows whose language is known qualify.
        """
        if not self.pack_windows or (self.multilingual and not opts.language):
            return None
        return replace(opts, word_timestamps=False)

    def _decode(self, units: Sequence["_Unit"]) -> List[WindowOutcome]:
        outcomes: List[Optional[WindowOutcome]] = [None] * len(units)
        groups: Dict[tuple, List[int]] = {}
        for index, unit in enumerate(units):
            groups.setdefault((unit.options.generation_key(), unit.fallback), []).append(index)
        for (_, fallback), indices in groups.items():
            def run(chosen: List[int]) -> List[dict]:
                return self._run_group(np.stack([units[i].features for i in chosen]),
                                       [units[i].num_frames for i in chosen],
                                       [units[i].options for i in chosen], fallback,
                                       [units[i].clip_frames for i in chosen])
            try:
                results = run(indices)
            except Exception:  # noqa: BLE001 - find which window breaks the batch
                log.exception("batch of %d windows failed; retrying them one by one", len(indices))
                results = []
                for i in indices:
                    try:
                        results.extend(run([i]))
                    except Exception as exc:  # noqa: BLE001 - belongs to this window only
                        log.exception("window failed")
                        results.append(exc)
            for i, result in zip(indices, results):
                outcomes[i] = result
        return outcomes  # type: ignore[return-value]

    def _unsupported(self, opts: DecodeOptions) -> Optional[Exception]:
        if self.multilingual:
            return None
        if opts.language not in (None, "en"):
            return InvalidInputError(
                f"the served model is English-only and cannot transcribe language "
                f"{opts.language!r}; leave LANGUAGE out or use 'en'.",
                "unsupported_language",
            )
        if opts.task == "translate":
            return InvalidInputError(
                "the served model is English-only and cannot translate; use TASK transcribe.",
                "unsupported_task",
            )
        return None

    # ------------------------------------------------------------------------ one group
    def _run_group(
        self, features: np.ndarray, num_frames: List[int], options: List[DecodeOptions],
        fallback: bool = True, clip_frames: Optional[List[Optional[List[int]]]] = None,
    ) -> List[dict]:
        """Decode windows in one batch. clip_frames: for a packed window, its clips' content
        frames (see packing), else None."""
        clip_frames = clip_frames or [None] * len(options)
        encoder_output = self._encode(features)
        languages = self._languages(encoder_output, options)
        tokenizers = [self.tokenizer(lang, o.task) for (lang, _, _), o in zip(languages, options)]
        prompts = [self._prompt(tok, o) for tok, o in zip(tokenizers, options)]
        decoded = self._generate_with_fallback(encoder_output, prompts, tokenizers, options[0],
                                               fallback)
        clip_starts = [[o / packing.FRAMES_PER_SECOND for o in packing.offsets(frames)[1:]]
                       if frames else [] for frames in clip_frames]
        if any(clip_starts):
            self._continue_past_skips(encoder_output, options, tokenizers, decoded, clip_starts)

        results = []
        for i, dec in enumerate(decoded):
            window_duration = num_frames[i] / self.model.frames_per_second
            silent = (
                dec.no_speech_prob > NO_SPEECH_THRESHOLD and dec.avg_logprob < LOG_PROB_THRESHOLD
            )
            segments, covered = ([], window_duration) if silent else split_by_timestamps(
                dec.tokens, self.timestamp_begin, window_duration
            )
            for seg in segments:
                seg["text"] = tokenizers[i].decode(seg["tokens"])
            segments = [s for s in segments if s["text"].strip()]
            results.append(
                {
                    "language": languages[i][0],
                    "language_probability": languages[i][1],
                    # The upload's language is chosen from these over all its windows.
                    "language_probs": languages[i][2],
                    "avg_logprob": dec.avg_logprob,
                    "no_speech_prob": dec.no_speech_prob,
                    "compression_ratio": dec.compression_ratio,
                    "temperature": dec.temperature,
                    "segments": segments,
                    # Window time up to which the text is complete; the front decodes the
                    # rest again as a new window.
                    "covered": covered,
                }
            )
        # A packed window needs word timings only where a segment runs across clips: the
        # words then say where to cut it (see packing.split_result).
        wanted = [i for i, o in enumerate(options) if results[i]["segments"] and (
            o.word_timestamps or (clip_frames[i]
                                  and packing.segments_cross_clips(results[i], clip_frames[i])))]
        self._add_words(encoder_output, num_frames, wanted, tokenizers, results)
        for result in results:
            for seg in result["segments"]:
                del seg["tokens"]
        return results

    def _encode(self, features: np.ndarray):
        features = np.ascontiguousarray(features, dtype=np.float32)
        if self.settings.device != "cpu" or len(features) == 1:
            return self.model.encode(features)
        # On the CPU a batched encode costs more per window than one window at a time
        # (tiny.en int8, one thread: 380 ms alone, 424 ms each in fours, 487 ms in eights):
        # the activations of one window stay in cache. Generation still runs batched.
        outputs = [np.asarray(self.model.encode(features[i:i + 1])) for i in range(len(features))]
        return ctranslate2.StorageView.from_array(np.concatenate(outputs))

    def _languages(self, encoder_output, options: List[DecodeOptions]
                   ) -> List[Tuple[str, float, Dict[str, float]]]:
        """(language, its probability, the most probable languages) per window."""
        chosen = [(o.language or "en", 1.0, {o.language or "en": 1.0}) for o in options]
        if not self.multilingual or all(o.language for o in options):
            return chosen
        # One decoder step for the whole batch is cheaper than slicing out the windows that
        # asked for detection.
        detected = self.model.model.detect_language(encoder_output)
        for i, o in enumerate(options):
            if not o.language:
                ranked = {token[2:-2]: round(float(p), 4)
                          for token, p in detected[i][:LANGUAGES_REPORTED]}
                language = next(iter(ranked))
                chosen[i] = (language, ranked[language], ranked)
        return chosen

    def _prompt(self, tokenizer: Tokenizer, opts: DecodeOptions,
                decoded_so_far: Sequence[int] = ()) -> List[int]:
        previous = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
        return self.model.get_prompt(
            tokenizer, previous_tokens=previous + list(decoded_so_far), without_timestamps=False,
            hotwords=opts.hotwords
        )

    def _generate_with_fallback(
        self,
        encoder_output,
        prompts: List[List[int]],
        tokenizers: List[Tokenizer],
        opts: DecodeOptions,
        fallback: bool = True,
    ) -> List[_Decoded]:
        pending = list(range(len(prompts)))
        attempts: List[List[_Decoded]] = [[] for _ in prompts]
        final: List[Optional[_Decoded]] = [None] * len(prompts)
        schedule = temperature_schedule(opts.temperature) if fallback else [opts.temperature]
        for temperature in schedule:
            subset = _take(encoder_output, pending, len(prompts))
            outputs = self._generate(subset, [prompts[i] for i in pending], opts.beam_size, temperature)
            still = []
            for i, out in zip(pending, outputs):
                dec = self._decoded(out, tokenizers[i], temperature)
                attempts[i].append(dec)
                if _needs_fallback(dec):
                    still.append(i)
                else:
                    final[i] = dec
            pending = still
            if not pending:
                break
        for i in pending:
            # Every temperature failed: keep the most probable non-repetitive attempt.
            good = [a for a in attempts[i] if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD]
            final[i] = max(good or attempts[i], key=lambda a: a.avg_logprob)
        return final  # type: ignore[return-value]

    def _generate(self, encoder_output, prompts, beam_size: int, temperature: float,
                  max_initial_timestamp_index: int = MAX_INITIAL_TIMESTAMP_INDEX):
        if temperature > 0:
            sampling = dict(beam_size=1, num_hypotheses=BEST_OF, sampling_topk=0,
                            sampling_temperature=temperature)
        else:
            sampling = dict(beam_size=beam_size)
        return self.model.model.generate(
            encoder_output,
            prompts,
            max_length=self.model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self.suppress_tokens,
            max_initial_timestamp_index=max_initial_timestamp_index,
            **sampling,
        )

    def _continue_past_skips(self, encoder_output, options: List[DecodeOptions], tokenizers,
                             decoded: List[_Decoded], clip_starts: List[List[float]]) -> None:
        """Packed windows where Whisper said end-of-text before a later clip began: decode on
        from that clip, on the same encoder output (no second encode).

        Whisper goes on as it does after a window boundary: the text so far is its previous
        text, and the first timestamp is forced to where the skipped clip starts. Measured on
        the test recordings: an upload that stops mid-sentence ("... in the ComfyUI") is often
        taken for the end of the window. (Forcing the whole text so far as a prefix costs as
        much as decoding it again: CTranslate2 steps through a prefix token by token.)
        """
        for _ in range(MAX_CONTINUATIONS):
            todo, stamps = [], []
            for i, dec in enumerate(decoded):
                start = _skipped_clip_start(dec.tokens, self.timestamp_begin, clip_starts[i] or [])
                if start is not None:
                    todo.append(i)
                    stamps.append(self.timestamp_begin + int(round(start / TIMESTAMP_SECONDS)))
            if not todo:
                return
            # One batch needs <|startoftranscript|> at one position: the same number of
            # previous tokens everywhere (the most recent ones).
            keep = min(len(decoded[i].tokens) for i in todo)
            continued = {}
            for i, stamp in zip(todo, stamps):
                # Each window's own prompt text and hotwords: packs with different ones may
                # share this batch.
                prompt = self._prompt(tokenizers[i], options[i], decoded[i].tokens[-keep:])
                continued.setdefault(len(prompt), []).append((i, prompt + [stamp]))
            for batch in continued.values():
                indices = [i for i, _ in batch]
                outputs = self._generate(_take(encoder_output, indices, len(decoded)),
                                         [prompt for _, prompt in batch],
                                         options[indices[0]].beam_size,
                                         decoded[indices[0]].temperature,
                                         max_initial_timestamp_index=TIMESTAMP_INDEX_LIMIT)
                for (i, prompt), out in zip(batch, outputs):
                    self._append(i, decoded, clip_starts, prompt[-1], out, tokenizers[i])

    def _append(self, i: int, decoded: List[_Decoded], clip_starts: List[List[float]],
                stamp: int, out, tokenizer: Tokenizer) -> None:
        """Add a continuation's tokens (after its forced timestamp) to window i's decode."""
        before = decoded[i]
        added = out.sequences_ids[0]
        if added[:1] == [stamp]:
            added = added[1:]  # CTranslate2 returns the forced token too
        if not any(t < self.eot for t in added):
            # Nothing said from there on: keep the window as it was decoded.
            clip_starts[i] = []
            return
        # A segment opened and left empty at the end gives way to the forced timestamp.
        head = before.tokens
        if len(head) >= 2 and head[-1] >= self.timestamp_begin and head[-2] >= self.timestamp_begin:
            head = head[:-1]
        tokens = head + [stamp] + added
        new_logprob = out.scores[0] * (len(added) + 1) / (len(added) + 2)
        weight = len(before.tokens) / len(tokens)
        text = tokenizer.decode(tokens).strip()
        decoded[i] = _Decoded(tokens, float(weight * before.avg_logprob
                                            + (1 - weight) * new_logprob),
                              before.no_speech_prob, compression_ratio(text), before.temperature)

    def _decoded(self, output, tokenizer: Tokenizer, temperature: float) -> _Decoded:
        tokens = output.sequences_ids[0]
        # CTranslate2 returns the cumulative log-probability normalised by length.
        avg_logprob = output.scores[0] * len(tokens) / (len(tokens) + 1)
        text = tokenizer.decode(tokens).strip()
        return _Decoded(tokens, float(avg_logprob), float(output.no_speech_prob),
                        compression_ratio(text), temperature)

    def _add_words(self, encoder_output, num_frames, wanted: List[int], tokenizers, results
                   ) -> None:
        by_tokenizer: Dict[int, List[int]] = {}
        for i in wanted:
            by_tokenizer.setdefault(id(tokenizers[i]), []).append(i)
        groups = list(by_tokenizer.values())
        if self.settings.device == "cpu":
            # One window at a time, like encode(): cheaper per window on the CPU.
            groups = [[i] for group in groups for i in group]
        for indices in groups:
            segment_lists = []
            for i in indices:
                for seg in results[i]["segments"]:
                    seg["seek"] = 0  # window time: the front adds the window's offset
                segment_lists.append(results[i]["segments"])
            self.model.add_word_timestamps(
                segment_lists,
                tokenizers[indices[0]],
                _take(encoder_output, indices, len(results)),
                [num_frames[i] for i in indices],
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )
            for i in indices:
                for seg in results[i]["segments"]:
                    seg.pop("seek", None)


@dataclass
class _Unit:
    """One window to decode: a lone clip's, or several clips packed into one."""
    features: np.ndarray  # [n_mels, 3000]
    num_frames: int
    options: DecodeOptions
    fallback: bool
    members: List[int]  # the batch's windows it answers for
    clip_frames: Optional[List[int]] = None  # packed: each clip's content frames


def _balanced(units: Sequence[_Unit], workers: int) -> List[List[int]]:
    """Unit indices per worker, longest first onto the least loaded worker.

    A window costs one encode plus generation roughly in proportion to its speech.
    """
    if workers <= 1:
        return [list(range(len(units)))]
    loads = [0.0] * workers
    shares: List[List[int]] = [[] for _ in range(workers)]
    cost = [1.0 + units[i].num_frames / packing.FRAMES for i in range(len(units))]
    for i in sorted(range(len(units)), key=lambda i: -cost[i]):
        w = loads.index(min(loads))
        shares[w].append(i)
        loads[w] += cost[i]
    return [sorted(share) for share in shares if share]


def _skipped_clip_start(tokens: List[int], timestamp_begin: int, clip_starts: Sequence[float]
                        ) -> Optional[float]:
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


def _needs_fallback(dec: _Decoded) -> bool:
    if dec.no_speech_prob > NO_SPEECH_THRESHOLD and dec.avg_logprob < LOG_PROB_THRESHOLD:
        return False  # silence: a higher temperature will not find speech
    return dec.compression_ratio > COMPRESSION_RATIO_THRESHOLD or dec.avg_logprob < LOG_PROB_THRESHOLD


def _packed_needs_fallback(result: dict) -> bool:
    """Whether a packed window's text is too improbable to keep (repetition: per clip)."""
    return _needs_fallback(_Decoded([], result["avg_logprob"], result["no_speech_prob"], 0.0,
                                    result["temperature"]))


def _take(encoder_output, indices: List[int], batch: int):
    """The encoder output of some windows of the batch (a copy through host memory)."""
    if len(indices) == batch:
        return encoder_output
    if encoder_output.device != "cpu":
        encoder_output = encoder_output.to_device(ctranslate2.Device.cpu)
    array = np.asarray(encoder_output)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array[indices]))


def _suppressed_tokens(tokenizer: Tokenizer) -> List[int]:
    """faster-whisper's default suppress_tokens=[-1]: non-speech symbols and special tokens."""
    tokens = set(tokenizer.non_speech_tokens)
    tokens.update(
        [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev,
         tokenizer.sot_lm, tokenizer.no_speech]
    )
    return sorted(tokens)
