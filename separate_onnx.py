"""Separate recordings with an exported ONNX model: needs only onnxruntime, numpy and soundfile.

    pip install onnxruntime numpy soundfile [soxr]     # soxr: inputs at another sample rate
    python separate_onnx.py conv_tasnet.onnx talk.flac --output_dir separated

The model's sample rate, number of speakers and chunking defaults come from the file (written by
export.py --file_format=ONNX). Same chunking, speaker matching and outputs as separate.py: writes
<name>_s1.wav ... at the input's rate; a file that fails is reported in one line and the others
are still processed (exit status 2).
"""
import argparse
import types

from src.model_utils.errors import UserError, run_main


def main():
    parser = argparse.ArgumentParser(description="Separate audio files with a Conv-TasNet ONNX "
                                                 "model (onnxruntime; no MindSpore needed)")
    parser.add_argument("model", help="the .onnx model written by export.py")
    parser.add_argument("input", help="an audio file, or a folder of them")
    parser.add_argument("--output_dir", default="./separated")
    parser.add_argument("--chunk_seconds", type=float, default=None,
                        help="chunk length, seconds (default: the model's; 0: whole file)")
    parser.add_argument("--overlap_seconds", type=float, default=None,
                        help="overlap of chunks, seconds (default: the model's)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime threads (0: one per core)")
    args = parser.parse_args()

    from src.deploy.onnx_runtime import load_onnx
    from src.deploy.separation import chunking, list_inputs, separate_inputs

    if not args.model.lower().endswith(".onnx"):
        raise UserError(f"{args.model}: expected an .onnx model")
    files = list_inputs(args.input)
    model_fn = load_onnx(args.model, args.threads)
    settings = model_fn.settings
    cfg = types.SimpleNamespace(
        model_path=args.model, input=args.input, output_dir=args.output_dir, plot=False,
        input_length=0, output_scale="mixture", output_format="pcm16",
        sample_rate=settings["sample_rate"], n_src=settings["n_src"],
        L=settings["L"], chunk_overlap=settings["chunk_overlap"] if args.overlap_seconds is None
        else args.overlap_seconds,
        separate_chunk_seconds=settings["separate_chunk_seconds"] if args.chunk_seconds is None
        else args.chunk_seconds)
    chunk, overlap, align = chunking(cfg, model_fn)
    _, failed = separate_inputs(model_fn, cfg, chunk, overlap, align)
    if failed:
        raise UserError(f"{len(failed)} of {len(files)} inputs failed")


if __name__ == "__main__":
    run_main(main)
