"""LLaVA-style training: prompt templates, supervised data with label masks, modality-grouped
sampling, model assembly and the DeepSpeed loop. Import the submodules you need; this package
imports nothing so that `som --help` stays instant."""
