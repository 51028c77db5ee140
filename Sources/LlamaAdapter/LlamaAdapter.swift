// LlamaAdapter: LLaMA-Adapter V2 in Swift. One import for the whole library API: load a model
// (`ModelContainer.load`), encode images, open sessions, generate (streamed or not), score, chat.
@_exported import AdapterCore
@_exported import AdapterFormats
@_exported import AdapterTokenizers
@_exported import AdapterVision
@_exported import AdapterModel
@_exported import AdapterGeneration
@_exported import AdapterTraining
@_exported import AdapterExperts
