"""The published CIFAR-10 recipes of the cifar10 suite, as data: every value with the paper, table, section or
reference-code file it comes from; the networks' parameter counts; the published evaluation protocol.

Values are given in this benchmark's coordinates: images live on [-1, 1] (``ebmbench.data.images``). Where a
paper worked on [0, 1], the value is converted and the note shows the conversion. ``suite_params`` gives the
parameters ``suites/cifar10.yaml`` must carry; ``markdown`` renders ``docs/recipes.md``
(``python -m ebmbench.recipes > docs/recipes.md``); ``networks`` builds the papers' networks from
``ebmbench.nets.cifar``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ebmbench.nets import cifar

CIFAR10_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class Sourced:
    """A value and where it comes from ("paper, table/section" or "paper's reference code, file")."""

    value: Any
    source: str
    note: str = ""


@dataclass(frozen=True)
class Count:
    """Parameters of one network: ours (the architecture as specified, counted layer by layer) and the paper's.

    ``paper`` is the count the paper states, or None where none was found; ``rounding`` is the half unit of
    the paper's last printed digit (35.7 million: 0.05 million), the tolerance of the comparison.
    """

    network: str
    ours: int
    specified_in: str
    paper: float | None = None
    paper_source: str = "no count found (reference code read in full; the paper's appendix not available here)"
    rounding: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """One method's published CIFAR-10 recipe."""

    key: str
    title: str
    method: str  # registered ebmbench method
    arch: str  # the method's `arch` parameter: a network of ebmbench.nets.cifar
    cite: str
    params: dict[str, Sourced]  # suite parameters: RunConfig fields and the method's own, in our coordinates
    counts: tuple[Count, ...]
    protocol: str  # the published evaluation protocol
    published: tuple[str, ...]  # the published numbers (rows of ../shared/published_results.csv)
    deviations: tuple[str, ...] = field(default_factory=tuple)  # what this suite does differently, and why


IGEBM = "Du & Mordatch 2019 (arXiv 1903.08689)"
IGEBM_CODE = "Du & Mordatch 2019, reference code openai/ebm_code_release"
SHORT_RUN = "Nijkamp et al. 2019 (arXiv 1904.09770)"
SHORT_RUN_CODE = "Nijkamp et al. 2019, reference code enijkamp/short_run train_cifar10_minimal.py"
NCSN = "Song & Ermon 2019 (arXiv 1907.05600)"
NCSN_CODE = "Song & Ermon 2019, reference code ermongroup/ncsn"
DDPM = "Ho et al. 2020 (arXiv 2006.11239)"
DDPM_CODE = "Ho et al. 2020, reference code hojonathanho/diffusion scripts/run_cifar.py"
DDIM = "Song et al. 2021, DDIM (arXiv 2010.02502)"
WGAN_GP = "Gulrajani et al. 2017 (arXiv 1704.00028)"
WGAN_GP_CODE = "Gulrajani et al. 2017, reference code igul222/improved_wgan_training gan_cifar_resnet.py"
SNGAN = "Miyato et al. 2018 (arXiv 1802.05957)"
SNGAN_CODE = "Miyato et al. 2018, reference code pfnet-research/sngan_projection"

# IGEBM's Langevin step on [0, 1]: x <- clip(x + N(0, 0.005^2) - 10 * clip_elementwise(grad E, 0.01), 0, 1).
# On x' = 2x - 1: grad' = grad / 2, so the step is x' <- x' - 40 * clip_elementwise(grad', 0.005) + N(0, 0.01^2).
IGEBM_EPS = 4 * 10.0
IGEBM_NOISE = 2 * 0.005
IGEBM_T = IGEBM_NOISE**2 / (2 * IGEBM_EPS)
IGEBM_GRAD_CLIP = 0.005 * math.sqrt(math.prod(CIFAR10_SHAPE))  # L2 norm bound of the elementwise clip


RECIPES: dict[str, Recipe] = {}


def _add(recipe: Recipe) -> None:
    RECIPES[recipe.key] = recipe


_add(Recipe(
    key="igebm",
    title="IGEBM: PCD with a replay buffer (unconditional CIFAR-10)",
    method="pcd_ebm",
    arch="igebm_resnet",
    cite=IGEBM,
    params={
        "batch_size": Sourced(128, f"{IGEBM_CODE} README.md, CIFAR-10 unconditional command (--batch_size=128)"),
        "lr": Sourced(3e-4, f"{IGEBM_CODE} train.py, flag lr (default 3e-4; the README command keeps it)"),
        "adam_beta1": Sourced(0.0, f"{IGEBM_CODE} train.py, AdamOptimizer(lr, beta1=0.0, beta2=0.999)"),
        "adam_beta2": Sourced(0.999, f"{IGEBM_CODE} train.py, AdamOptimizer(lr, beta1=0.0, beta2=0.999)"),
        "train_steps": Sourced(121200, f"{IGEBM_CODE} README.md, resume_iter of cifar10_large_model_uncond",
                               "the iteration of the released unconditional checkpoint the README evaluates; "
                               "the paper states no iteration count"),
        "eval_weights": Sourced("raw", f"{IGEBM_CODE} train.py", "no weight averaging in the reference code"),
        "langevin_steps": Sourced(60, f"{IGEBM_CODE} README.md, CIFAR-10 unconditional command (--num_steps=60)"),
        "langevin_eps": Sourced(IGEBM_EPS, f"{IGEBM_CODE} README.md (--step_lr=10.0)",
                                "step 10 on [0, 1] data is 40 on [-1, 1]: x' = 2x - 1 doubles the step and "
                                "halves the gradient"),
        "langevin_T": Sourced(IGEBM_T, f"{IGEBM_CODE} train.py, chain noise stddev 0.005 on [0, 1]",
                              f"noise stddev 0.01 on [-1, 1] = sqrt(2 eps T), T = 0.01^2 / (2 * 40) = {IGEBM_T:.3g}"),
        "langevin_grad_clip": Sourced(round(IGEBM_GRAD_CLIP, 4), f"{IGEBM_CODE} README.md (--proj_norm=0.01, type li)",
                             "the paper clips each coordinate of grad E to 0.01 on [0, 1] (0.005 on [-1, 1]); "
                             "our ULA clips the per-sample L2 norm, here to that clip's bound 0.005 sqrt(3072)"),
        "support_mode": Sourced("clamp", f"{IGEBM_CODE} train.py, tf.clip_by_value(x_mod, 0, rescale)"),
        "buffer_size": Sourced(50000, f"{IGEBM_CODE} train.py, ReplayBuffer(50000)"),
        "reinit_frac": Sourced(0.05, f"{IGEBM_CODE} train.py, replay_mask = uniform > 0.05",
                               "5% of each batch restart from uniform noise"),
        "l2_weight": Sourced(1.0, f"{IGEBM_CODE} train.py, loss += mean(E(x+)^2) + mean(E(x-)^2)"),
        "spectral_norm": Sourced(False, f"{IGEBM_CODE} train.py, flag spec_norm (default True)",
                                 "igebm_resnet has spectral norm built in (not the output layer, as in the code)"),
        "sample_steps": Sourced(60, f"{IGEBM_CODE} README.md (--num_steps=60)", "fresh chains as long as training's"),
        "n_eval_samples": Sourced(50000, "published_results.csv, IGEBM note: official eval code test_inception.py"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
        "samplers": Sourced("langevin,replay_buffer", f"{IGEBM_CODE} test_inception.py",
                            "the published FID draws from the replay buffer; fresh chains show the model itself"),
    },
    counts=(Count("energy", 18_591_105,
                  f"{IGEBM_CODE} models.py ResNet32Large (num_filters=128, --large_model), trained parameters "
                  "the unconditional forward pass uses"),),
    protocol=("FID and IS of 50,000 samples drawn from the replay buffer, with an ensemble of 10 checkpoints, FID "
              "against all 60,000 CIFAR-10 train+test images (official test_inception.py, per "
              "published_results.csv). This suite uses one model, no ensemble, and the test split as reference."),
    published=("FID 38.2, IS 6.78 (unconditional; cited in Ho et al. 2020, Table 1)",
               "FID 40.58 (wizwand; likely a single model rather than the 10-checkpoint ensemble)"),
    deviations=(
        "dropout 0.5 inside the residual blocks of the reference ResNet32Large (train=True) is left out: it would make "
        "E(x) random during Langevin sampling, outside the run's generator",
        "the reference caps the second conv of each block at spectral norm 1 and starts it near 0; torch's "
        "spectral_norm normalizes to exactly 1 with default init",
        "the replay buffer stores float chains in fixed slots; the reference stores uint8 images in a FIFO queue",
        "10-checkpoint ensembling at evaluation is not reproduced",
    ),
))

_add(Recipe(
    key="short_run",
    title="Short-run EBM: non-persistent K-step Langevin from noise",
    method="short_run_ebm",
    arch="shortrun_convnet",
    cite=SHORT_RUN,
    params={
        "batch_size": Sourced(64, f"{SHORT_RUN_CODE} (m = 8**2)"),
        "lr": Sourced(1e-4, f"{SHORT_RUN_CODE} (Adam lr=1e-4)"),
        "adam_beta1": Sourced(0.9, f"{SHORT_RUN_CODE} (betas=[.9, .999])"),
        "adam_beta2": Sourced(0.999, f"{SHORT_RUN_CODE} (betas=[.9, .999])"),
        "train_steps": Sourced(100000, f"{SHORT_RUN_CODE} (n_i = 10**5)"),
        "eval_weights": Sourced("raw", SHORT_RUN_CODE, "no weight averaging in the reference code"),
        "langevin_steps": Sourced(100, f"{SHORT_RUN} Sec. 5 (K = 100); {SHORT_RUN_CODE} (K = 100)",
                                  "the same K in training and at evaluation"),
        "langevin_eps": Sourced(1.0, f"{SHORT_RUN_CODE} (x += f'(x) + 1e-2 * noise, f = -E)",
                                "the gradient step has unit size: eps = 1"),
        "langevin_T": Sourced(5e-5, f"{SHORT_RUN_CODE} (noise stddev 1e-2)", "sqrt(2 * 1 * T) = 0.01"),
        "l2_weight": Sourced(0.0, f"{SHORT_RUN_CODE} (L = f(x+) - f(x-), no energy penalty)"),
        "support_mode": Sourced("none", f"{SHORT_RUN_CODE} (chains are not clamped)"),
        "langevin_grad_clip": Sourced(0.0, f"{SHORT_RUN_CODE} (no gradient clipping in the chains)"),
        "n_eval_samples": Sourced(40000, f"{SHORT_RUN} Sec. 5.1, per published_results.csv",
                                  "IS/FID on 40,000 generated examples"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
        "samplers": Sourced("langevin", SHORT_RUN, "the model is its K-step sampler from uniform noise"),
    },
    counts=(Count("energy", 2_763_393, f"{SHORT_RUN_CODE}, class F with n_f = 64"),),
    protocol=("IS and FID of 40,000 samples of the K = 100 step short-run sampler, trained on 40,000 observed "
              "examples (Sec. 5.1, per published_results.csv)."),
    published=("FID 44.5 (K = 100; wizwand, and as cited in CPMLA Table 1)",),
    deviations=(
        "the reference adds N(0, 0.03^2) noise to each data batch (sigma = 3e-2); the method has no data-noise "
        "parameter, so data are used as they are",
        "the paper trains on 40,000 observed examples; this suite uses the full training split",
    ),
))

_add(Recipe(
    key="ncsn",
    title="NCSN: noise-conditional score network, annealed Langevin dynamics",
    method="ncsn",
    arch="ncsn_refinenet",
    cite=NCSN,
    params={
        "batch_size": Sourced(128, f"{NCSN} Appendix B.1; {NCSN_CODE} configs/anneal.yml (batch_size 128)"),
        "lr": Sourced(1e-3, f"{NCSN_CODE} configs/anneal.yml (optim lr 0.001)"),
        "adam_beta1": Sourced(0.9, f"{NCSN_CODE} configs/anneal.yml (beta1 0.9)"),
        "adam_beta2": Sourced(0.999, f"{NCSN_CODE} configs/anneal.yml", "beta2 not set there: torch's default"),
        "train_steps": Sourced(200000, f"{NCSN_CODE} configs/anneal.yml (n_iters 200001)"),
        "eval_weights": Sourced("raw", NCSN_CODE, "NCSN keeps no EMA (EMA came with NCSNv2)"),
        "n_sigmas": Sourced(10, f"{NCSN} Sec. 5 (L = 10)"),
        "sigma_max": Sourced(2.0, f"{NCSN} Sec. 5 (sigma_1 = 1 on [0, 1] data)", "sigma doubles on [-1, 1]"),
        "sigma_min": Sourced(0.02, f"{NCSN} Sec. 5 (sigma_10 = 0.01 on [0, 1] data)", "sigma doubles on [-1, 1]"),
        "steps_per_sigma": Sourced(100, f"{NCSN} Sec. 5 (T = 100)"),
        "eps": Sourced(8e-5, f"{NCSN} Sec. 5 (epsilon = 2e-5 on [0, 1] data)",
                       "alpha_i = eps sigma_i^2 / sigma_L^2 must scale by 4 when x doubles: 4 * 2e-5"),
        "denoise": Sourced(False, f"{NCSN} Algorithm 1", "no final denoising step (NCSNv2 added it)"),
        "init": Sourced("uniform", f"{NCSN} Sec. 5 (chains start from uniform noise)"),
        "support_mode": Sourced("none", f"{NCSN} Algorithm 1", "samples are returned as they are"),
        "n_eval_samples": Sourced(50000, "not verified for NCSN", "the 50,000 of the DDPM and Score SDE protocol"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
    },
    counts=(Count("score", 30_117_635,
                  f"{NCSN} Appendix B.1 (4-cascaded dilated RefineNet, CondInstanceNorm++, ELU); "
                  f"{NCSN_CODE} models/cond_refinenet_dilated.py CondRefineNetDilated, ngf 128, 10 levels"),),
    protocol=("IS and FID of samples of annealed Langevin dynamics (L = 10, T = 100, 1,001 network evaluations "
              "with the final one), no denoising; the sample count is not verified here."),
    published=("FID 25.32, IS 8.87 (cited in Ho et al. 2020, Table 1; IS 8.91 in arXiv v1)",),
    deviations=(
        "the network is conditioned on c_noise = 100 ln sigma and its output is divided by sigma (the model class of "
        "ebmbench.methods.score); at the L trained levels it uses exactly the paper's per-level "
        "CondInstanceNorm++ parameters, between them it interpolates them linearly",
        "random horizontal flips of the training images are not applied (no augmentation parameter)",
    ),
))

_add(Recipe(
    key="ddpm",
    title="DDPM with L_simple; DDPM and DDIM samplers",
    method="ddpm",
    arch="ddpm_unet",
    cite=f"{DDPM}; sampler sweep of {DDIM}",
    params={
        "batch_size": Sourced(128, f"{DDPM} Appendix B (batch size 128)"),
        "lr": Sourced(2e-4, f"{DDPM} Appendix B (learning rate 2e-4 for CIFAR10)"),
        "adam_beta1": Sourced(0.9, f"{DDPM_CODE} (optimizer adam, TF defaults)"),
        "adam_beta2": Sourced(0.999, f"{DDPM_CODE} (optimizer adam, TF defaults)"),
        "train_steps": Sourced(800000, f"{DDPM} Appendix B (800k steps)"),
        "ema_decay": Sourced(0.9999, f"{DDPM} Appendix B (EMA decay 0.9999)"),
        "eval_weights": Sourced("ema", f"{DDPM_CODE} (evaluation: skip_non_ema_pass=True)"),
        "grad_clip": Sourced(1.0, f"{DDPM_CODE} (grad_clip=1.)"),
        "num_train_timesteps": Sourced(1000, f"{DDPM} Sec. 4 (T = 1000)"),
        "beta_schedule": Sourced("linear", f"{DDPM} Sec. 4 (linear from beta_1 to beta_T)"),
        "beta_start": Sourced(1e-4, f"{DDPM} Sec. 4 (beta_1 = 1e-4)"),
        "beta_end": Sourced(0.02, f"{DDPM} Sec. 4 (beta_T = 0.02)"),
        "variance_type": Sourced("fixed_large", f"{DDPM_CODE} (model_var_type='fixedlarge': sigma_t^2 = beta_t)"),
        "clip_sample": Sourced(True, f"{DDPM_CODE}; diffusion_utils_2.py p_sample(clip_denoised=True)",
                               "the x0 prediction is clipped to [-1, 1] in every sampler step"),
        "prediction_type": Sourced("epsilon", f"{DDPM} Sec. 3.2, eq. 14 (L_simple)"),
        "timestep_spacing": Sourced("leading", f"{DDIM} Sec. D.2 (tau = uniform subsequence)",
                                    "t = k * (T // steps), the uniform skip of DDIM's CIFAR10 runs"),
        "ddim_eta": Sourced(0.0, f"{DDIM} Table 1 (eta = 0)"),
        "step_sweep": Sourced("10,20,50,100,1000", f"{DDIM} Table 1 (S = 10, 20, 50, 100, 1000)"),
        "n_eval_samples": Sourced(50000, f"{DDPM_CODE} (num_inception_samples=50000); {DDPM} Table 1"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
        "samplers": Sourced("ddpm,ddim", f"{DDPM} Algorithm 2; {DDIM} Table 1"),
    },
    counts=(Count("eps", 35_746_307, f"{DDPM_CODE} (model unet2d16b2: ch 128, ch_mult (1, 2, 2, 2), "
                  "num_res_blocks 2, attn_resolutions (16,), dropout 0.1) as a diffusers UNet2DModel",
                  paper=35.7e6, paper_source=f"{DDPM} Appendix B ('Our CIFAR10 model has 35.7 million parameters')",
                  rounding=0.05e6),),
    protocol=("FID of 50,000 samples against the training set (Table 1; 5.24 against the test set, Sec. 4.1), "
              "EMA weights, 1000 ancestral steps; DDIM Table 1: the same model at S = 10 ... 1000 steps, eta = 0."),
    published=("DDPM: FID 3.17, IS 9.46 (Ho et al. 2020, Table 1); FID 5.24 against the test set",
               "DDIM eta = 0: FID 13.36 / 6.84 / 4.67 / 4.16 / 4.04 at 10 / 20 / 50 / 100 / 1000 steps (Table 1)"),
    deviations=(
        "the learning-rate warmup over the first 5000 steps (run_cifar.py warmup=5000) is not applied: "
        "the run has no learning-rate schedule",
        "random horizontal flips of the training images are not applied (no augmentation parameter)",
        "fixed_large: diffusers uses beta_t at every step; the reference uses the posterior variance for t = 1's "
        "log-variance (it matters for likelihoods, not for sampling)",
    ),
))

_add(Recipe(
    key="wgan_gp",
    title="WGAN-GP, ResNet (unconditional CIFAR-10)",
    method="wgan_gp",
    arch="wgan_gp_resnet",
    cite=WGAN_GP,
    params={
        "batch_size": Sourced(64, f"{WGAN_GP_CODE} (BATCH_SIZE = 64, critic batch)"),
        "lr": Sourced(2e-4, f"{WGAN_GP_CODE} (LR = 2e-4)", "decayed linearly to 0 in the reference (DECAY = True)"),
        "beta1": Sourced(0.0, f"{WGAN_GP_CODE} (AdamOptimizer beta1=0.)"),
        "beta2": Sourced(0.9, f"{WGAN_GP_CODE} (AdamOptimizer beta2=0.9)"),
        "n_critic": Sourced(5, f"{WGAN_GP} Algorithm 1 (n_critic = 5); {WGAN_GP_CODE} (N_CRITIC = 5)"),
        "gp_weight": Sourced(10.0, f"{WGAN_GP} Algorithm 1 (lambda = 10)"),
        "latent_dim": Sourced(128, f"{WGAN_GP_CODE} (noise of shape [n, 128])"),
        "train_steps": Sourced(100000, f"{WGAN_GP_CODE} (ITERS = 100000 generator iterations)"),
        "eval_weights": Sourced("raw", WGAN_GP_CODE, "no weight averaging in the reference code"),
        "n_eval_samples": Sourced(50000, "not verified for WGAN-GP", "the 50,000 of the usual IS protocol"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
    },
    counts=(Count("generator", 1_204_483, f"{WGAN_GP_CODE} (Generator, DIM_G = 128, batch norm)"),
            Count("discriminator", 1_053_825, f"{WGAN_GP_CODE} (Discriminator, DIM_D = 128, no normalization, "
                                              "unconditional: no ACGAN output)")),
    protocol="Inception score (Table 3, unsupervised CIFAR-10 ResNet); the paper reports no FID.",
    published=("IS 7.86 +/- 0.07 (ResNet; cited in Miyato et al. 2018, Table 2)",
               "FID 40.2 is Miyato et al.'s run of WGAN-GP with the standard CNN, not this ResNet"),
    deviations=(
        "the linear learning-rate decay to 0 is not applied (no learning-rate schedule)",
        "the generator step uses a batch of the critic's size; the reference uses twice as many (GEN_BS_MULTIPLE = 2)",
        "the reference dequantizes data with U(0, 1/128) noise; data are used as they are",
        "G and critic keep torch's default init; the reference uses He init",
    ),
))

_add(Recipe(
    key="sngan",
    title="SNGAN, ResNet, hinge loss (unconditional CIFAR-10)",
    method="sngan",
    arch="sngan_resnet",
    cite=SNGAN,
    params={
        "batch_size": Sourced(64, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (batchsize 64)"),
        "lr": Sourced(2e-4, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (adam alpha 0.0002)",
                      "decayed linearly to 0 in the reference (iteration_decay_start 0)"),
        "beta1": Sourced(0.0, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (beta1 0.0)"),
        "beta2": Sourced(0.9, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (beta2 0.9)"),
        "n_critic": Sourced(5, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (n_dis 5)"),
        "latent_dim": Sourced(128, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (dim_z 128)"),
        "train_steps": Sourced(50000, f"{SNGAN_CODE} configs/sn_cifar10_unconditional.yml (iteration 50000)"),
        "eval_weights": Sourced("raw", SNGAN_CODE, "no weight averaging in the reference code"),
        "n_eval_samples": Sourced(50000, f"{SNGAN_CODE} evaluation.py (inception score: n_ims=50000)",
                                  "the same code computes FID from 5000 samples"),
        "eval_batch_size": Sourced(1000, "ours", "sampling batch; no effect on the result"),
    },
    counts=(Count("generator", 4_276_739, f"{SNGAN_CODE} gen_models/resnet_32.py (ch 256, bottom width 4)"),
            Count("discriminator", 1_053_824, f"{SNGAN_CODE} dis_models/snresnet_32.py (ch 128, unconditional)")),
    protocol=("IS of 50,000 samples; FID of generated samples against precomputed CIFAR-10 statistics (5,000 "
              "samples in the reference evaluation.py); real data score FID 7.8 under this protocol (Table 2)."),
    published=("FID 21.7, IS 8.22 (ResNet, hinge loss; cited in Ho et al. 2020, Table 1)",),
    deviations=(
        "the linear learning-rate decay to 0 is not applied (no learning-rate schedule)",
        "the generator step uses a batch of the critic's size; the reference uses 128 (n_gen_samples)",
    ),
))


# --- sized for one GPU (suites/cifar10.yaml) and the papers' budgets (suites/cifar10-paper.yaml) ----------------
# Learning-curve points follow a cheap protocol of ours in both suites: 5,000 samples of one sampler at each of 8
# doublings of the step count, scored by FID with the domain classifier (not Inception, not comparable to papers);
# the final evaluation keeps each paper's protocol (the recipe's samplers and sample count, Inception FID/IS).
CURVE_PROTOCOL = {"curve_points": 8, "curve_n": 5000, "curve_metrics": "fid_domain"}
CURVE_SAMPLER = {"igebm": "langevin", "short_run": "langevin", "ncsn": "annealed_langevin", "ddpm": "ddim@50",
                 "wgan_gp": "generator", "sngan": "generator"}


@dataclass(frozen=True)
class Budget:
    """A shorter variant of a recipe that does not fit one GPU-day (``ebmbench.estimate``): what changes and why.

    Its runs are labelled ``<key>_budget`` in suites/cifar10.yaml; a number from one is not the paper's recipe."""

    key: str
    overrides: dict[str, Sourced]
    why: str


BUDGETS = {
    "igebm": Budget("igebm", {
        "train_steps": Sourced(20000, "ours (budget)", "1/6 of the released checkpoint's 121,200 iterations"),
    }, "121,200 steps of 60 Langevin steps at batch 128 alone count 5.3e18 FLOPs (37 h at the assumed 40 TFLOP/s)"),
    "ncsn": Budget("ncsn", {
        "train_steps": Sourced(50000, "ours (budget)", "1/4 of the paper's 200,000 iterations"),
        "n_eval_samples": Sourced(10000, "ours (budget)", "1,000 NFE per sample: 50,000 samples count 9.9e17 FLOPs"),
        "likelihood_points": Sourced(2000, "ours (budget)", "PF-ODE NLL on the first 2,000 test images"),
        "curve_points": Sourced(4, "ours (budget)", "4 curve points (of 1,000 NFE per sample)"),
        "curve_n": Sourced(2000, "ours (budget)", "2,000 samples per curve point"),
    }, "200,000 steps count 1.5e18 FLOPs and 50,000 annealed-Langevin samples 9.9e17 (17 h at the assumed rate)"),
    "ddpm": Budget("ddpm", {
        "train_steps": Sourced(100000, "ours (budget)", "1/8 of the paper's 800,000 steps"),
        "samplers": Sourced("ddim", "ours (budget)", "DDIM only: 1000 ancestral steps on 50,000 samples count 6e17"),
        "step_sweep": Sourced("10,20,50,100", "ours (budget)", "DDIM Table 1 without S = 1000"),
        "likelihood_points": Sourced(2000, "ours (budget)", "ELBO and PF-ODE NLL on the first 2,000 test images"),
    }, "800,000 steps count 3.7e18 FLOPs (26 h at the assumed rate) and the sampler sweep 1.4e18 (10 h)"),
}


def suite_params(recipe: Recipe) -> dict[str, Any]:
    """The flat parameters of the recipe's run in a suite file: its values and its ``arch``."""
    return {"arch": recipe.arch, **{k: v.value for k, v in recipe.params.items()}}


def suite_block(recipe: Recipe, budget: bool = False) -> dict[str, Any]:
    """The method_params block of the recipe in a suite: its parameters, its curve sampler and, for the budget
    variant, the budget's overrides."""
    block = {**suite_params(recipe), "curve_samplers": CURVE_SAMPLER[recipe.key]}
    if budget:
        block.update({k: v.value for k, v in BUDGETS[recipe.key].overrides.items()})
    return block


def networks(recipe: Recipe, shape: tuple[int, ...] = CIFAR10_SHAPE) -> dict[str, nn.Module]:
    """The recipe's networks by role (energy, eps, score, or generator and discriminator)."""
    kind = cifar.ALL_ARCHS[recipe.arch]
    if kind == "energy":
        return {"energy": cifar.energy_net(recipe.arch, shape)}
    if kind == "eps":
        return {"eps": cifar.eps_net(recipe.arch, shape)}
    if kind == "score":
        p = recipe.params
        return {"score": cifar.score_net(recipe.arch, shape, sigma_max=p["sigma_max"].value,
                                         sigma_min=p["sigma_min"].value, n_sigmas=p["n_sigmas"].value)}
    g, d = cifar.gan_nets(recipe.arch, shape, recipe.params["latent_dim"].value)
    return {"generator": g, "discriminator": d}


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters (spectral norm's power-iteration vectors are buffers, not parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")


def _count_rows() -> list[str]:
    rows = ["| recipe | network | ours | paper | paper's source | architecture specified in |", "|---" * 6 + "|"]
    for r in RECIPES.values():
        for c in r.counts:
            paper = f"{c.paper / 1e6:g} M (+/- {c.rounding / 1e6:g} M)" if c.paper is not None else "not stated"
            rows.append(f"| {r.key} | {c.network} | {c.ours:,} | {paper} | {_cell(c.paper_source)} | "
                        f"{_cell(c.specified_in)} |")
    return rows


def _recipe_section(r: Recipe) -> list[str]:
    out = [f"## {r.key}: {r.title}", "", f"Method `{r.method}`, network `arch: {r.arch}`; {r.cite}.", "",
           "| parameter | value | source | note |", "|---|---|---|---|"]
    out += [f"| `{k}` | {_cell(v.value)} | {_cell(v.source)} | {_cell(v.note)} |" for k, v in r.params.items()]
    out += ["", f"**Evaluation protocol.** {r.protocol}", "", "**Published.**", ""]
    out += [f"- {p}" for p in r.published]
    if r.deviations:
        out += ["", "**Differences from the paper in this suite.**", ""]
        out += [f"- {d}" for d in r.deviations]
    return out + [""]


def markdown() -> str:
    """docs/recipes.md: the parameter-count table and, per recipe, every value with its source."""
    lines = ["# Published CIFAR-10 recipes of the cifar10 suite", "",
             "Generated from `ebmbench/recipes.py` (`python -m ebmbench.recipes > docs/recipes.md`); "
             "`tests/test_recipes.py` checks that this file matches it. Values are in this benchmark's "
             "coordinates, images on [-1, 1]; conversions from [0, 1] are in the notes.", "",
             "## Parameter counts", "",
             "`ours` is the parameter count of `ebmbench.nets.cifar`'s network, equal to the count of the "
             "architecture as specified (checked layer by layer in the tests); where the paper states a count, "
             "ours must lie within its rounding.", ""]
    lines += _count_rows() + [""]
    for r in RECIPES.values():
        lines += _recipe_section(r)
    return "\n".join(lines + _budget_section())


def _budget_section() -> list[str]:
    out = ["## Sized for one GPU: curve points and budget variants", "",
           f"Both CIFAR-10 suites draw learning-curve points with a cheap protocol of ours: {CURVE_PROTOCOL} and one "
           "sampler per recipe (`curve_samplers`: "
           + ", ".join(f"{k} {v}" for k, v in CURVE_SAMPLER.items()) + "). The final evaluation is the paper's. "
           "`suites/cifar10-paper.yaml` runs every recipe at its paper's budget; `suites/cifar10.yaml` runs the "
           "recipes that fit one GPU-day as they are and the others as labelled budget variants "
           "(`--only <key>_budget`):", "", "| variant | parameter | value | note |", "|---|---|---|---|"]
    for b in BUDGETS.values():
        out += [f"| {b.key}_budget | `{k}` | {_cell(v.value)} | {_cell(v.note)} |" for k, v in b.overrides.items()]
    out += [""] + [f"- {b.key}_budget: {b.why}." for b in BUDGETS.values()]
    return out + [""]


if __name__ == "__main__":
    print(markdown(), end="")
