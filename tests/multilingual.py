"""Non-Latin test text: the export parity corpus's CJK, Arabic, Devanagari, Cyrillic and emoji lines, a Hypothesis
strategy built from their words (so ZWJ sequences, skin tones and combining marks stay whole, which random code
points almost never produce), and mixed-script records for `llmforge prepare` and `llmforge eval`."""

from __future__ import annotations

from hypothesis import strategies as st

from llmforge.export.parity import MULTILINGUAL_TEXTS

WORDS = sorted({w for text in MULTILINGUAL_TEXTS for w in text.split()})
multilingual_text = st.builds(lambda words, sep: sep.join(words), st.lists(st.sampled_from(WORDS), min_size=1,
                                                                           max_size=6),
                              st.sampled_from([" ", "", "\n", "، ", "。"]))

QUESTIONS = {  # script -> (question, answer) pairs in that script
    "Latin": [("What is the capital of France?", "Paris is the capital of France."),
              ("Name a colour.", "Blue, like the sky 🙂")],
    "Han": [("法国的首都是哪里？", "法国的首都是巴黎。"), ("说一种颜色。", "蓝色，像天空一样。")],
    "Hiragana/Katakana": [("フランスの首都はどこですか？", "フランスの首都はパリです。"),
                          ("色をひとつ言ってください。", "あおいろ、そらのいろです 👩🏽\u200d💻")],
    "Hangul": [("프랑스의 수도는 어디입니까?", "프랑스의 수도는 파리입니다."), ("색깔 하나를 말해 주세요.", "파란색입니다 👋🏿")],
    "Arabic": [("ما هي عاصمة فرنسا؟", "عاصمة فرنسا هي باريس."), ("اذكر لونًا.", "الأزرق، مِثْلُ السَّمَاءِ.")],
    "Devanagari": [("फ्रांस की राजधानी क्या है?", "फ्रांस की राजधानी पेरिस है।"), ("एक रंग बताइए।", "नीला, आसमान जैसा। ❤️\u200d🔥")],
}


def mixed_script_records(copies: int = 1) -> list[dict]:
    """input/output records in every script of QUESTIONS, `copies` times each (distinct by a numbered prefix in the
    input, so deduplication keeps them)."""
    return [{"input": f"{i}. {q}", "output": a} for i in range(copies) for pairs in QUESTIONS.values()
            for q, a in pairs]
