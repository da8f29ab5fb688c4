"""Model definitions: the text classifier, its loading, saving and artifacts."""
