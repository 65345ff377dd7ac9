"""LLaVA conversation records of marked images: listing and QA, re-exported under the name the
flows, the chat server and older code import them by.

The code lives in one module per job: `som.data.llava` (the record format, shared with
`som data check` and `som data mix`), `som.data.listing` and `som.data.qa`.
"""

from som.data.listing import ListingConfig, build_listing, listing_answer, load_question_pool
from som.data.llava import IMAGE_TOKEN, image_reference, llava_record, record_problems
from som.data.qa import QA_KINDS, QAConfig, QAItem, QARecord, build_qa, qa_items

__all__ = [
    "IMAGE_TOKEN", "QA_KINDS", "ListingConfig", "QAConfig", "QAItem", "QARecord", "build_listing", "build_qa",
    "image_reference", "listing_answer", "llava_record", "load_question_pool", "qa_items", "record_problems",
]
