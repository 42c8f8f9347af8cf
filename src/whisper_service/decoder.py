"""The Whisper model itself: encode, detect languages, build prompts, generate with temperature
fallback, continue past skipped clips, align words; warm-up and release.

faster-whisper's WhisperModel provides the CTranslate2 model, tokenizer and word alignment.
This module decodes whatever batch it is given; deciding what goes into a batch is the
scheduler's job.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from whisper_service import continuation, packing, quality
from whisper_service.decoding import BatchLayout, DecodeWindow
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions
from whisper_service.quality import Attempt
from whisper_service.segments import split_by_timestamps
from whisper_service.settings import ModelSettings
from whisper_service.window_result import WindowResult, WindowSegment, WordTiming

log = logging.getLogger(__name__)

BEST_OF = 5  # faster-whisper's default: hypotheses sampled at a temperature above 0
MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s
TIMESTAMP_INDEX_LIMIT = 1500  # <|30.00|>: a continuation's forced first timestamp may be anywhere
# Languages (most probable first) reported per window whose language was detected.
LANGUAGES_REPORTED = 5
# A short window's language is detected on its speech and this much of its padding, not on
# 30 s: on the evalset's 60 short clips this took a tenth of the time of detection on the
# padded window and agreed with it on 59 (the other: English at 0.48 there, Arabic at 0.48).
DETECTION_PADDING_FRAMES = 100
# Languages whose windows are encoded on their speech and settings.encode_padding_frames of
# padding, not on the whole 30 s: the encoder's work grows faster than its input (attention),
# and a 6 s clip then costs a fifth of a 30 s encode. Measured on the evalset's windows decoded
# alone, language given, 5 s of padding against 30 s (four copies of each file, ~3600 English
# words, ~720 Mandarin characters): English WER 0.144 against 0.147, Mandarin CER 0.175 against
# 0.178. German and French each lost a word of a short sentence at every padding under 30 s
# ("ein" for "einen"), so other languages keep the whole window.
SHORT_ENCODE_LANGUAGES = frozenset({"en", "zh"})
# A language detected on a short encode is trusted from this probability on (as the scheduler
# trusts one detected on a clip's speech to pack it).
TRUSTED_SHORT_DETECTION = 0.5
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class WhisperDecoder:
    def __init__(self, settings: ModelSettings, device_index: int = 0,
                 layout: Optional[BatchLayout] = None):
        self.layout = layout or BatchLayout(settings.batch_layout)
        self.encode_padding_frames = settings.encode_padding_frames
        self.model = WhisperModel(
            settings.model_path,
            device=settings.device,
            device_index=device_index,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.cpu_workers,
            download_root=settings.download_root,
        )
        self.multilingual = self.model.model.is_multilingual
        self.n_mels = self.model.model.n_mels
        self._tokenizers: Dict[Tuple[str, str], Tokenizer] = {}
        base = self.tokenizer("en", "transcribe")
        self.timestamp_begin = base.timestamp_begin
        self.eot = base.eot
        self.suppress_tokens = list(get_suppressed_tokens(base, [-1]))

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
        """Touch every stage once (encode, language detection, generation) on silence.

        Generation is cut to a few tokens: Whisper on silence can babble up to the length
        limit at every fallback temperature, which would only make loading slow.
        """
        features = np.zeros((windows, self.n_mels, 3000), dtype=np.float32)
        encoder_output = self._encode(features)
        if self.multilingual:
            self.model.model.detect_language(encoder_output)
        prompt = self._prompt(self.tokenizer("en", "transcribe"), DecodeOptions())
        self.model.model.generate(encoder_output, [prompt] * windows, beam_size=5,
                                  max_length=len(prompt) + 4, return_scores=True,
                                  return_no_speech_prob=True)

    def encoded_frames(self, window: DecodeWindow) -> int:
        """Log-mel frames of this window the encoder reads first (see SHORT_ENCODE_LANGUAGES):
        a window of unknown language is first encoded short, like one of those languages."""
        language = window.options.language
        if language and language not in SHORT_ENCODE_LANGUAGES:
            return packing.FRAMES
        return min(packing.FRAMES, _even(window.num_frames + self.encode_padding_frames))

    def refusal(self, options: DecodeOptions) -> Optional[InvalidInputError]:
        if self.multilingual:
            return None
        if options.language not in (None, "en"):
            return InvalidInputError(
                f"the served model is English-only and cannot transcribe language "
                f"{options.language!r}; leave LANGUAGE out or use 'en'.",
                "unsupported_language",
            )
        if options.task == "translate":
            return InvalidInputError(
                "the served model is English-only and cannot translate; use TASK transcribe.",
                "unsupported_task",
            )
        return None

    # ------------------------------------------------------------------------ one batch
    def decode(self, windows: Sequence[DecodeWindow], fallback: bool = True
               ) -> List[WindowResult]:
        features = np.stack([w.features for w in windows])
        options = [w.options for w in windows]
        encoder_output, languages = self._encode_and_detect(features, windows)
        tokenizers = [self.tokenizer(lang, o.task) for (lang, _, _), o in zip(languages, options)]
        prompts = [self._prompt(tok, o) for tok, o in zip(tokenizers, options)]
        attempts = self._generate_with_fallback(encoder_output, prompts, tokenizers, options,
                                                fallback)
        clip_starts = [[o / packing.FRAMES_PER_SECOND for o in packing.offsets(w.clip_frames)[1:]]
                       if w.clip_frames else [] for w in windows]
        if any(clip_starts):
            continuation.continue_past_skips(
                attempts, clip_starts, self.timestamp_begin, self.eot,
                prompt_for=lambda i, previous: self._prompt(tokenizers[i], options[i], previous),
                generate=lambda indices, chosen: self._generate(
                    _take(encoder_output, indices, len(windows)), chosen,
                    options[indices[0]].beam_size, attempts[indices[0]].temperature,
                    max_initial_timestamp_index=TIMESTAMP_INDEX_LIMIT),
                text_of=lambda i, tokens: tokenizers[i].decode(tokens))

        results, token_segments = [], []
        for window, attempt, tokenizer, language in zip(windows, attempts, tokenizers, languages):
            duration = window.num_frames / self.model.frames_per_second
            raw, covered = (([], duration)
                            if quality.is_silence(attempt.no_speech_prob, attempt.avg_logprob)
                            else split_by_timestamps(attempt.tokens, self.timestamp_begin,
                                                     duration))
            for seg in raw:
                seg["text"] = tokenizer.decode(seg["tokens"])
            raw = [s for s in raw if s["text"].strip()]
            token_segments.append(raw)
            results.append(WindowResult(
                language=language[0], language_probability=language[1],
                language_probs=language[2], avg_logprob=attempt.avg_logprob,
                no_speech_prob=attempt.no_speech_prob,
                compression_ratio=attempt.compression_ratio, temperature=attempt.temperature,
                segments=[WindowSegment(s["start"], s["end"], s["text"],
                                        unfinished=bool(s.get("unfinished"))) for s in raw],
                covered=covered))
        # A packed window needs word timings only where a segment runs across clips: the
        # words then say where to cut it (see packing.split_result).
        wanted = [i for i, w in enumerate(windows) if results[i].segments and (
            w.options.word_timestamps
            or (w.clip_frames and packing.segments_cross_clips(results[i], w.clip_frames)))]
        self._add_words(encoder_output, [w.num_frames for w in windows], wanted, tokenizers,
                        token_segments, results)
        return results

    def detect_languages(self, windows: Sequence[DecodeWindow]) -> List[Dict[str, float]]:
        """Each window's most probable languages, detected on an encode of its speech and a
        second of padding only: the encoder's work grows with its input, and a 5 s clip is a
        sixth of the 30 s that decoding must encode. Whisper was trained on 30 s windows, so
        the probabilities are lower than on the padded window; the caller decides what to trust.
        """
        lengths = [min(packing.FRAMES, _even(w.num_frames + DETECTION_PADDING_FRAMES))
                   for w in windows]
        if self.layout is BatchLayout.BATCHED:
            # One encode for the batch, as long as its longest window.
            groups = [(list(range(len(windows))), max(lengths))]
        else:
            groups = [([i], length) for i, length in enumerate(lengths)]
        found: List[Dict[str, float]] = [{} for _ in windows]
        for indices, length in groups:
            features = np.ascontiguousarray(
                np.stack([windows[i].features[:, :length] for i in indices]), dtype=np.float32)
            detected = self.model.model.detect_language(self.model.encode(features))
            for i, row in zip(indices, detected):
                found[i] = _ranked(row)
        return found

    def _encode(self, features: np.ndarray, frames: int = packing.FRAMES):
        """The encoder output of the first `frames` log-mel frames of each window."""
        features = np.ascontiguousarray(features[:, :, :frames], dtype=np.float32)
        if self.layout is BatchLayout.BATCHED or len(features) == 1:
            return self.model.encode(features)
        # Per window (see BatchLayout); generation still runs batched.
        outputs = [np.asarray(self.model.encode(features[i:i + 1])) for i in range(len(features))]
        return ctranslate2.StorageView.from_array(np.concatenate(outputs))

    def _encode_and_detect(self, features: np.ndarray, windows: Sequence[DecodeWindow]):
        """The windows' encoder output, and (language, probability, most probable languages)
        per window. Encoded short where SHORT_ENCODE_LANGUAGES allow; a window of unknown
        language is first encoded short too, and the whole batch is encoded again on the whole
        window where its language, detected there, is not one of them or is unsure (as
        faster-whisper detects it: on the padded window)."""
        options = [w.options for w in windows]
        frames = max(self.encoded_frames(w) for w in windows)
        encoder_output = self._encode(features, frames)
        languages = self._languages(encoder_output, options)
        if frames < packing.FRAMES and any(
                not o.language and (language not in SHORT_ENCODE_LANGUAGES
                                    or probability < TRUSTED_SHORT_DETECTION)
                for o, (language, probability, _) in zip(options, languages)):
            encoder_output = self._encode(features)
            languages = self._languages(encoder_output, options)
        return encoder_output, languages

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
                ranked = _ranked(detected[i])
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

    def _generate_with_fallback(self, encoder_output, prompts: List[List[int]],
                                tokenizers: List[Tokenizer], options: Sequence[DecodeOptions],
                                fallback: bool = True) -> List[Attempt]:
        opts = options[0]  # beam size and temperature are the batch's (generation_key)
        pending = list(range(len(prompts)))
        attempts: List[List[Attempt]] = [[] for _ in prompts]
        final: List[Optional[Attempt]] = [None] * len(prompts)
        schedule = quality.temperature_schedule(opts.temperature) if fallback else [opts.temperature]
        for temperature in schedule:
            subset = _take(encoder_output, pending, len(prompts))
            outputs = self._generate(subset, [prompts[i] for i in pending], opts.beam_size,
                                     temperature)
            still = []
            for i, out in zip(pending, outputs):
                attempt = _attempt(out, tokenizers[i], temperature, options[i].task)
                attempts[i].append(attempt)
                if quality.needs_fallback(attempt.avg_logprob, attempt.no_speech_prob,
                                          attempt.compression_ratio, attempt.off_target):
                    still.append(i)
                else:
                    final[i] = attempt
            pending = still
            if not pending:
                break
        for i in pending:
            final[i] = quality.best_attempt(attempts[i])
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

    def _add_words(self, encoder_output, num_frames: List[int], wanted: List[int],
                   tokenizers: List[Tokenizer], token_segments: List[List[dict]],
                   results: List[WindowResult]) -> None:
        by_tokenizer: Dict[int, List[int]] = {}
        for i in wanted:
            by_tokenizer.setdefault(id(tokenizers[i]), []).append(i)
        groups = list(by_tokenizer.values())
        if self.layout is BatchLayout.PER_WINDOW:
            groups = [[i] for group in groups for i in group]
        for indices in groups:
            for i in indices:
                for seg in token_segments[i]:
                    seg["seek"] = 0  # window time: the front adds the window's offset
            self.model.add_word_timestamps(
                [token_segments[i] for i in indices],
                tokenizers[indices[0]],
                _take(encoder_output, indices, len(results)),
                [num_frames[i] for i in indices],
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )
            for i in indices:
                # Alignment also moves a segment's bounds to its first and last word.
                for segment, aligned in zip(results[i].segments, token_segments[i]):
                    segment.start, segment.end = aligned["start"], aligned["end"]
                    segment.words = [WordTiming(w["start"], w["end"], w["word"], w["probability"])
                                     for w in aligned.get("words", [])]


def _attempt(output, tokenizer: Tokenizer, temperature: float, task: str) -> Attempt:
    tokens = output.sequences_ids[0]
    # CTranslate2 returns the cumulative log-probability normalised by length.
    avg_logprob = output.scores[0] * len(tokens) / (len(tokens) + 1)
    text = tokenizer.decode(tokens).strip()
    return Attempt(tokens, float(avg_logprob), float(output.no_speech_prob),
                   quality.compression_ratio(text), temperature, quality.off_target(text, task))


def _ranked(detected) -> Dict[str, float]:
    """The most probable languages of one window's detection, most probable first."""
    return {token[2:-2]: round(float(p), 4) for token, p in detected[:LANGUAGES_REPORTED]}


def _even(frames: int) -> int:
    return frames + frames % 2  # the encoder halves the frames


def _take(encoder_output, indices: List[int], batch: int):
    """The encoder output of some windows of the batch (a copy through host memory)."""
    if len(indices) == batch:
        return encoder_output
    if encoder_output.device != "cpu":
        encoder_output = encoder_output.to_device(ctranslate2.Device.cpu)
    array = np.asarray(encoder_output)
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array[indices]))
