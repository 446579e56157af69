from medisee.conversation import (
    IGNORE_INDEX,
    answer_prefix,
    candidate_phrase,
    parse_answer,
    refuses_repeated_word,
    repeats_a_word,
)

TOKENS = ("[SEG]", "[BBOX]")
QUERY_TEXT = "which organ filters the blood?"


def test_prompt_layout_marks_image_slot_and_supervises_only_the_answer(tiny_shared):
    bundle = tiny_shared
    encoded = bundle.prompts.encode("which organ filters the blood?", "Sure, it is [SEG] and [BBOX].")
    n = bundle.config.num_image_slot_tokens  # CLIP patches + the aligner's queries
    ids = encoded.input_ids
    assert ids[0] == bundle.tokenizer.bos_token_id and ids[-1] == bundle.tokenizer.eos_token_id
    head = bundle.tokenizer.decode(ids[1 : encoded.image_at])
    assert head.strip() == "[INST]"
    tail = bundle.tokenizer.decode(ids[encoded.image_at + n : encoded.answer_start])
    assert tail.strip() == "which organ filters the blood? [/INST]"
    assert all(label == IGNORE_INDEX for label in encoded.labels[: encoded.answer_start])
    assert encoded.labels[encoded.answer_start :] == ids[encoded.answer_start :]
    answer = bundle.tokenizer.decode(ids[encoded.answer_start : -1])
    assert answer.strip() == "Sure, it is [SEG] and [BBOX]."


def test_naming_tokens_cover_the_names_and_the_character_after_each_group(tiny_shared):
    prompts, tokenizer = tiny_shared.prompts, tiny_shared.tokenizer
    answer = "Sure, <p>Liver</p> [SEG] and [BBOX], <p>left kidney</p> [SEG] and [BBOX]. The liverish one."
    ids = prompts.encode(QUERY_TEXT, answer).input_ids
    start = prompts.encode(QUERY_TEXT, answer).answer_start
    picked = prompts.naming_tokens(answer, ["liver", "left kidney"], "[BBOX]")
    text = tokenizer.decode([ids[start + i] for i in picked])
    # tokens that overlap a name (with the tags they are merged with) and the group ends; not "liverish"
    assert text.replace(" ", "").replace("<p>", "").replace("</p>", "") == "Liver,leftkidney."
    assert prompts.naming_tokens("No, nothing here.", ["liver"], "[BBOX]") == []
    single = "Sure, it is [SEG] and [BBOX]. Done."
    picked = prompts.naming_tokens(single, [], "[BBOX]")  # the form after "Sure," and the stop after the group
    ids = prompts.encode(QUERY_TEXT, single).input_ids[prompts.encode(QUERY_TEXT, single).answer_start:]
    assert tokenizer.decode([ids[i] for i in picked]).replace(" ", "") == "it."


def test_candidate_phrase_and_prefix():
    assert candidate_phrase(TOKENS) == "[SEG] and [BBOX]"
    assert candidate_phrase(("[A]", "[B]", "[C]")) == "[A], [B] and [C]"
    assert answer_prefix(TOKENS) == "Sure, it is [SEG] and [BBOX]."


def test_parse_single_entity_answer():
    parsed = parse_answer("Sure, it is [SEG] and [BBOX]. The kidney filters blood.", TOKENS)
    assert parsed.phrases == [""]
    assert parsed.text == "The kidney filters blood."


def test_parse_multi_entity_and_malformed_answers():
    text = "<p>liver</p> [SEG] and [BBOX], <p>spleen</p> [SEG] and [BBOX]."
    assert parse_answer(text, TOKENS).phrases == ["liver", "spleen"]
    assert parse_answer(text, TOKENS).text == "liver, spleen."
    broken = "<p>liver [SEG] and [BBOX] then </p> spleen [SEG]"
    parsed = parse_answer(broken, TOKENS)
    assert len(parsed.phrases) == 2 and "<p>" not in parsed.text and "</p>" not in parsed.text
    assert parse_answer("nothing grounded here", TOKENS).phrases == []


def test_malformed_multi_entity_output_never_raises_and_keeps_phrases_in_order():
    # an unclosed tag, a stray closing tag, and a third group with no phrase at all
    text = "Sure, <p>liver</p> [SEG] and [BBOX], <p>spleen [SEG] and [BBOX], </p> [SEG] and [BBOX]."
    parsed = parse_answer(text, TOKENS)
    assert parsed.phrases == ["liver", "", ""]  # the unclosed "<p>spleen" is not a phrase
    assert "<p>" not in parsed.text and "</p>" not in parsed.text and "[SEG]" not in parsed.text
    # a phrase after the last group names nothing; groups follow the first candidate token
    assert parse_answer("[SEG] and [BBOX] <p>kidney</p>", TOKENS).phrases == [""]
    assert parse_answer("<p>a</p> [SEG] [SEG] [BBOX]", TOKENS).phrases == ["a", ""]


def test_a_stuttered_closing_tag_ends_the_phrase():
    # seen from the tiny model: the tag's characters repeated inside the name
    parsed = parse_answer("Sure, <p>spleen</pleen</pleen</p> [SEG] and [BBOX].", TOKENS)
    assert parsed.phrases == ["spleen"] and parsed.text == "spleen."
    assert parse_answer("Sure, <p>liver</p> [SEG], <p>spleen<pleen</p> [SEG].", TOKENS).phrases == ["liver", "spleen"]


def test_a_structure_named_again_is_said_once():
    parsed = parse_answer("Sure, <p>aorta</p> [SEG], <p>aorta</p> [SEG] and <p>heart</p> [SEG].", TOKENS)
    assert parsed.text == "aorta and heart." and parsed.phrases == ["aorta", "aorta", "heart"]


def test_repeats_hidden_from_decoding_by_a_token_are_said_once():
    assert parse_answer("It holds and they [SEG] and they hold.", TOKENS).text == "It holds and they hold."
    assert parse_answer("The brain controls sensation and [SEG], and boxed here.", TOKENS).text == (
        "The brain controls sensation and boxed here.")


def test_a_name_written_then_tagged_reads_once():
    parsed = parse_answer("The right lung<p>right lung</p> [SEG] is large.", TOKENS)
    assert parsed.text == "The right lung is large." and parsed.phrases == ["right lung"]


def test_greedy_decoding_refuses_to_say_four_words_again(tiny_tokenizer):
    refuse = refuses_repeated_word(tiny_tokenizer)
    said = tiny_tokenizer("It controls movement, sensation and speech, and it also controls movement, sensation",
                          add_special_tokens=False).input_ids
    again = tiny_tokenizer(" and", add_special_tokens=False).input_ids
    assert refuse(said, again[0])  # "controls movement sensation and" a second time: a loop
    fresh = tiny_tokenizer("It controls movement, sensation", add_special_tokens=False).input_ids
    assert not refuse(fresh, again[0])


def test_a_word_said_twice_back_to_back_is_found_and_refused(tiny_tokenizer):
    assert repeats_a_word("The stomach stomach is full") and repeats_a_word("heartheart")
    assert not repeats_a_word("Sure, <p>liver</p> [SEG] and [BBOX], <p>spleen</p> [SEG] and [BBOX].")
    assert not repeats_a_word("the left and the right kidney")
    assert repeats_a_word("sensation and, and.") and repeats_a_word("The right lungright lung")  # a phrase, glued
    assert not repeats_a_word("a heart murmur") and not repeats_a_word("The brain is the brain, so")
    refuse = refuses_repeated_word(tiny_tokenizer)
    ids = tiny_tokenizer("The liver", add_special_tokens=False).input_ids
    again = tiny_tokenizer(" liver", add_special_tokens=False).input_ids
    assert refuse(ids + again[:-1], again[-1])  # would complete "liver liver"
    other = tiny_tokenizer(" is", add_special_tokens=False).input_ids
    assert not refuse(ids, other[0])
