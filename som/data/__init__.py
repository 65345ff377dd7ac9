"""Instruction data from Set-of-Mark outputs: tag names, LLaVA listing/QA conversations, mixing.

- `naming`: a name (and its source) for every tag of a marks JSON, from COCO ground truth
  matched by mask IoU or from the category the segmenter already recorded.
- `llava`: the LLaVA record format (records, their problems, ids, image paths), shared by
  the builders, `som data check` (`check`) and `som data mix` (`mixing`).
- `listing` and `qa`: LLaVA records ("list the items one by one" and tag-grounded QA) whose
  answers are true of the marks metadata they are built from.
- `mixing`: a base LLaVA instruction mix plus SoM records, shuffled with a seed in bounded
  memory, ids unique, images checked, with a dataset card.
- `json_stream`: the bounded-memory JSON array reader that `check` and `mixing` stream with.
"""
