"""Sentences true at every value: every registered score's wording, plain and against the baseline, and the
number that decided a rule, checked against sentences written out by hand (gate/outputs/sentences.py)."""

from __future__ import annotations

import math

import pytest

from gate.metrics.registry import all_specs, percent
from gate.outputs.sentences import decision, rule_sentence, rule_text, warning_sentence
from gate.result import ChangeWarning, RuleResult

# (score, op, threshold, {value: sentence}): a plain rule at values on both sides of its threshold, at 0 and 1,
# and at -0.2 for signed scores. Written out by hand: each must be true at its value.
PLAIN: list[tuple[str, str, float, dict[float, str]]] = [
    ('accuracy', '>=', 0.9, {
        0.85: 'the model answers right on 85% of samples',
        0.95: 'the model answers right on 95% of samples',
        0.0: 'the model answers right on 0% of samples',
        1.0: 'the model answers right on 100% of samples',
    }),
    ('balanced_accuracy', '>=', 0.9, {
        0.85: 'averaged over classes, the model answers right on 85% of samples',
        0.95: 'averaged over classes, the model answers right on 95% of samples',
        0.0: 'averaged over classes, the model answers right on 0% of samples',
        1.0: 'averaged over classes, the model answers right on 100% of samples',
    }),
    ('worst_class_accuracy', '>=', 0.9, {
        0.85: 'the worst class is answered right on 85% of its samples',
        0.95: 'the worst class is answered right on 95% of its samples',
        0.0: 'the worst class is answered right on 0% of its samples',
        1.0: 'the worst class is answered right on 100% of its samples',
    }),
    ('class_accuracy.cat', '>=', 0.9, {
        0.85: 'class cat is answered right on 85% of its samples',
        0.95: 'class cat is answered right on 95% of its samples',
        0.0: 'class cat is answered right on 0% of its samples',
        1.0: 'class cat is answered right on 100% of its samples',
    }),
    ('selective_accuracy@0.8', '>=', 0.9, {
        0.85: 'on its 80% most confident answers the model is right 85% of the time',
        0.95: 'on its 80% most confident answers the model is right 95% of the time',
        0.0: 'on its 80% most confident answers the model is right 0% of the time',
        1.0: 'on its 80% most confident answers the model is right 100% of the time',
    }),
    ('nll', '<=', 0.5, {
        0.3: 'the true class gets a mean negative log-likelihood of 0.3',
        0.7: 'the true class gets a mean negative log-likelihood of 0.7',
        0.0: 'the true class gets a mean negative log-likelihood of 0',
        1.0: 'the true class gets a mean negative log-likelihood of 1',
    }),
    ('brier', '<=', 0.5, {
        0.3: 'the probabilities miss the true answer by a Brier score of 0.3',
        0.7: 'the probabilities miss the true answer by a Brier score of 0.7',
        0.0: 'the probabilities miss the true answer by a Brier score of 0',
        1.0: 'the probabilities miss the true answer by a Brier score of 1',
    }),
    ('ece', '<=', 0.1, {
        0.05: 'stated confidence and real accuracy differ by 5% on average',
        0.2: 'stated confidence and real accuracy differ by 20% on average',
        0.0: 'stated confidence matches real accuracy exactly',
        1.0: 'stated confidence and real accuracy differ by 100% on average',
    }),
    ('overconfidence_error', '<=', 0.1, {
        0.05: 'the model claims 5% more confidence than it earns on average',
        0.2: 'the model claims 20% more confidence than it earns on average',
        0.0: 'the model never claims more confidence than it earns',
        1.0: 'the model claims 100% more confidence than it earns on average',
    }),
    ('mce', '<=', 0.1, {
        0.05: 'in its worst confidence bin the model is off by 5%',
        0.2: 'in its worst confidence bin the model is off by 20%',
        0.0: 'in every confidence bin stated confidence matches real accuracy',
        1.0: 'in its worst confidence bin the model is off by 100%',
    }),
    ('confident_wrong_rate@0.9', '<=', 0.1, {
        0.05: '5% of samples are wrong with at least 90% confidence',
        0.2: '20% of samples are wrong with at least 90% confidence',
        0.0: 'no sample is wrong with 90% confidence or more',
        1.0: '100% of samples are wrong with at least 90% confidence',
    }),
    ('confident_wrong_rate@0.99', '<=', 0.1, {
        0.05: '5% of samples are wrong with at least 99% confidence',
        0.2: '20% of samples are wrong with at least 99% confidence',
        0.0: 'no sample is wrong with 99% confidence or more',
        1.0: '100% of samples are wrong with at least 99% confidence',
    }),
    ('mean_confidence_wrong', '<=', 0.1, {
        0.05: 'wrong answers still come with 5% confidence on average',
        0.2: 'wrong answers still come with 20% confidence on average',
        0.0: 'wrong answers still come with 0% confidence on average',
        1.0: 'wrong answers still come with 100% confidence on average',
    }),
    ('aurc', '<=', 0.5, {
        0.3: 'the risk-coverage curve has an area of 0.3',
        0.7: 'the risk-coverage curve has an area of 0.7',
        0.0: 'the risk-coverage curve has an area of 0',
        1.0: 'the risk-coverage curve has an area of 1',
    }),
    ('alignment.energy', '>=', 0.9, {
        0.85: "85% of the map's mass lies on the object",
        0.95: "95% of the map's mass lies on the object",
        0.0: "0% of the map's mass lies on the object",
        1.0: "100% of the map's mass lies on the object",
    }),
    ('alignment.lift', '>=', 2.0, {
        1.5: 'the map puts 1.50× the mass on the object that a uniform map would',
        2.5: 'the map puts 2.50× the mass on the object that a uniform map would',
        0.0: 'the map puts no mass on the object',
        1.0: 'the map puts 1.00× the mass on the object that a uniform map would',
    }),
    ('alignment.pointing_game', '>=', 0.9, {
        0.85: "the map's peak lands on the object on 85% of samples",
        0.95: "the map's peak lands on the object on 95% of samples",
        0.0: "the map's peak lands on the object on 0% of samples",
        1.0: "the map's peak lands on the object on 100% of samples",
    }),
    ('alignment.rank_accuracy', '>=', 0.9, {
        0.85: "85% of the map's hottest pixels are on the object",
        0.95: "95% of the map's hottest pixels are on the object",
        0.0: "0% of the map's hottest pixels are on the object",
        1.0: "100% of the map's hottest pixels are on the object",
    }),
    ('alignment.off_object_rate', '<=', 0.1, {
        0.05: 'the map lands off the object on 5% of samples',
        0.2: 'the map lands off the object on 20% of samples',
        0.0: 'the map never lands off the object',
        1.0: 'the map lands off the object on 100% of samples',
    }),
    ('alignment.coverage', '>=', 0.9, {
        0.85: '85% of samples could be scored for alignment',
        0.95: '95% of samples could be scored for alignment',
        0.0: '0% of samples could be scored for alignment',
        1.0: '100% of samples could be scored for alignment',
    }),
    ('alignment.excluded', '<=', 5, {
        3: '3 samples were left out of alignment',
        8: '8 samples were left out of alignment',
        0.0: 'no sample was left out of alignment',
        1.0: '1 sample was left out of alignment',
    }),
    ('alignment.zero_maps', '<=', 5, {
        3: '3 samples with a mask got an all-zero map',
        8: '8 samples with a mask got an all-zero map',
        0.0: 'no sample with a mask got an all-zero map',
        1.0: '1 sample with a mask got an all-zero map',
    }),
    ('alignment.lift.correct', '>=', 2.0, {
        1.5: 'on right answers the map puts 1.50× the uniform mass on the object',
        2.5: 'on right answers the map puts 2.50× the uniform mass on the object',
        0.0: 'on right answers the map puts 0.00× the uniform mass on the object',
        1.0: 'on right answers the map puts 1.00× the uniform mass on the object',
    }),
    ('alignment.lift.wrong', '>=', 2.0, {
        1.5: 'on wrong answers the map puts 1.50× the uniform mass on the object',
        2.5: 'on wrong answers the map puts 2.50× the uniform mass on the object',
        0.0: 'on wrong answers the map puts 0.00× the uniform mass on the object',
        1.0: 'on wrong answers the map puts 1.00× the uniform mass on the object',
    }),
    ('alignment.energy.correct', '>=', 0.9, {
        0.85: "on right answers 85% of the map's mass lies on the object",
        0.95: "on right answers 95% of the map's mass lies on the object",
        0.0: "on right answers 0% of the map's mass lies on the object",
        1.0: "on right answers 100% of the map's mass lies on the object",
    }),
    ('alignment.energy.wrong', '>=', 0.9, {
        0.85: "on wrong answers 85% of the map's mass lies on the object",
        0.95: "on wrong answers 95% of the map's mass lies on the object",
        0.0: "on wrong answers 0% of the map's mass lies on the object",
        1.0: "on wrong answers 100% of the map's mass lies on the object",
    }),
    ('alignment.lift.class.cat', '>=', 2.0, {
        1.5: 'for class cat the map puts 1.50× the uniform mass on the object',
        2.5: 'for class cat the map puts 2.50× the uniform mass on the object',
        0.0: 'for class cat the map puts 0.00× the uniform mass on the object',
        1.0: 'for class cat the map puts 1.00× the uniform mass on the object',
    }),
    ('atlas.off_object_share', '<=', 0.1, {
        0.05: '5% of the mean map lies where objects (almost) never are',
        0.2: '20% of the mean map lies where objects (almost) never are: the model looks at'
            ' fixed places of the image',
        0.0: 'none of the mean map lies where objects (almost) never are',
        1.0: '100% of the mean map lies where objects (almost) never are: the model looks at'
            ' fixed places of the image',
    }),
    ('background.only_fg_accuracy', '>=', 0.9, {
        0.85: 'with the scene removed the model answers right on 85% of samples',
        0.95: 'with the scene removed the model answers right on 95% of samples',
        0.0: 'with the scene removed the model answers right on 0% of samples',
        1.0: 'with the scene removed the model answers right on 100% of samples',
    }),
    ('background.only_bg_accuracy', '<=', 0.1, {
        0.05: 'the scene alone gives the right answer 5% of the time',
        0.2: 'the scene alone gives the right answer 20% of the time: the scene alone carries part of the answer',
        0.0: 'the scene alone never gives the right answer',
        1.0: 'the scene alone gives the right answer 100% of the time: the scene alone carries part of the answer',
    }),
    ('background.only_bg_chance_adjusted', '<=', 0.1, {
        0.05: 'the scene alone beats chance by 5% of the possible margin',
        0.2: 'the scene alone beats chance by 20% of the possible margin: the scene alone carries part of the answer',
        0.0: 'the scene alone does no better than chance',
        1.0: 'the scene alone beats chance by 100% of the possible margin: the scene alone'
            ' carries part of the answer',
        -0.2: 'the scene alone does worse than chance, by 20% of the possible margin',
    }),
    ('background.mixed_same_accuracy', '>=', 0.9, {
        0.85: 'on another scene of its own class the object is recognised 85% of the time',
        0.95: 'on another scene of its own class the object is recognised 95% of the time',
        0.0: 'on another scene of its own class the object is recognised 0% of the time',
        1.0: 'on another scene of its own class the object is recognised 100% of the time',
    }),
    ('background.mixed_rand_accuracy', '>=', 0.9, {
        0.85: "on another class's scene the object is recognised 85% of the time",
        0.95: "on another class's scene the object is recognised 95% of the time",
        0.0: "on another class's scene the object is recognised 0% of the time",
        1.0: "on another class's scene the object is recognised 100% of the time",
    }),
    ('background.bg_gap', '<=', 0.1, {
        0.05: 'a matching scene adds 5% to accuracy',
        0.2: 'a matching scene adds 20% to accuracy: the scene, not only the object, carries the answer',
        0.0: 'a matching scene adds nothing to accuracy',
        1.0: 'a matching scene adds 100% to accuracy: the scene, not only the object, carries the answer',
        -0.2: 'a matching scene lowers accuracy by 20%',
    }),
    ('background.flip_rate', '<=', 0.1, {
        0.05: 'the answer changes on 5% of samples when the object moves to another scene',
        0.2: 'the answer changes on 20% of samples when the object moves to another scene:'
            ' the answer often follows the scene',
        0.0: 'no answer changes when the object moves to another scene',
        1.0: 'the answer changes on 100% of samples when the object moves to another scene:'
            ' the answer often follows the scene',
    }),
    ('border.flip_rate', '<=', 0.1, {
        0.05: "the answer changes on 5% of samples when the border comes from another class's image",
        0.2: "the answer changes on 20% of samples when the border comes from another class's"
            ' image: the border carries part of the answer',
        0.0: "no answer changes when the border comes from another class's image",
        1.0: 'the answer changes on 100% of samples when the border comes from another'
            " class's image: the border carries part of the answer",
    }),
    ('border.accuracy', '>=', 0.9, {
        0.85: "with another class's border the model answers right on 85% of samples",
        0.95: "with another class's border the model answers right on 95% of samples",
        0.0: "with another class's border the model answers right on 0% of samples",
        1.0: "with another class's border the model answers right on 100% of samples",
    }),
    ('border.accuracy_drop', '<=', 0.1, {
        0.05: "another class's border costs 5% of accuracy",
        0.2: "another class's border costs 20% of accuracy: the border carries part of the answer",
        0.0: "another class's border costs no accuracy",
        1.0: "another class's border costs 100% of accuracy: the border carries part of the answer",
        -0.2: "another class's border raises accuracy by 20%",
    }),
    ('corners.flip_rate', '<=', 0.1, {
        0.05: "the answer changes on 5% of samples when the corners come from another class's image",
        0.2: "the answer changes on 20% of samples when the corners come from another class's"
            ' image: the corners carry part of the answer',
        0.0: "no answer changes when the corners come from another class's image",
        1.0: 'the answer changes on 100% of samples when the corners come from another'
            " class's image: the corners carry part of the answer",
    }),
    ('corners.accuracy', '>=', 0.9, {
        0.85: "with another class's corners the model answers right on 85% of samples",
        0.95: "with another class's corners the model answers right on 95% of samples",
        0.0: "with another class's corners the model answers right on 0% of samples",
        1.0: "with another class's corners the model answers right on 100% of samples",
    }),
    ('corners.accuracy_drop', '<=', 0.1, {
        0.05: "another class's corners cost 5% of accuracy",
        0.2: "another class's corners cost 20% of accuracy: the corners carry part of the answer",
        0.0: "another class's corners cost no accuracy",
        1.0: "another class's corners cost 100% of accuracy: the corners carry part of the answer",
        -0.2: "another class's corners raise accuracy by 20%",
    }),
    ('lighting.flip_rate', '<=', 0.1, {
        0.05: "the answer changes on 5% of samples under another class's lighting",
        0.2: "the answer changes on 20% of samples under another class's lighting: the"
            ' lighting carries part of the answer',
        0.0: "no answer changes under another class's lighting",
        1.0: "the answer changes on 100% of samples under another class's lighting: the"
            ' lighting carries part of the answer',
    }),
    ('lighting.accuracy', '>=', 0.9, {
        0.85: "under another class's lighting the model answers right on 85% of samples",
        0.95: "under another class's lighting the model answers right on 95% of samples",
        0.0: "under another class's lighting the model answers right on 0% of samples",
        1.0: "under another class's lighting the model answers right on 100% of samples",
    }),
    ('lighting.accuracy_drop', '<=', 0.1, {
        0.05: "another class's lighting costs 5% of accuracy",
        0.2: "another class's lighting costs 20% of accuracy: the lighting carries part of the answer",
        0.0: "another class's lighting costs no accuracy",
        1.0: "another class's lighting costs 100% of accuracy: the lighting carries part of the answer",
        -0.2: "another class's lighting raises accuracy by 20%",
    }),
    ('sanity.randomization_similarity', '<=', 0.5, {
        0.3: 'maps keep a Spearman similarity of 0.3 when the top layers are randomised',
        0.7: 'maps keep a Spearman similarity of 0.7 when the top layers are randomised: the'
            ' maps barely depend on the trained weights',
        0.0: 'maps keep a Spearman similarity of 0 when the top layers are randomised',
        1.0: 'maps keep a Spearman similarity of 1 when the top layers are randomised: the'
            ' maps barely depend on the trained weights',
        -0.2: 'maps keep a Spearman similarity of -0.2 when the top layers are randomised',
    }),
    ('sanity.randomization_similarity.spread', '<=', 0.5, {
        0.3: 'the sanity similarity varies by 0.3 across random copies',
        0.7: 'the sanity similarity varies by 0.7 across random copies',
        0.0: 'the sanity similarity varies by 0 across random copies',
        1.0: 'the sanity similarity varies by 1 across random copies',
    }),
]
# (score, {change: sentence}): a non-inferiority rule (max_drop 0.01) at a drop, a gain and no change.
BASELINE: list[tuple[str, dict[float, str]]] = [
    ('accuracy', {
        -0.02: "accuracy is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "accuracy is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "accuracy equals the baseline's; it may drop at most 1.0 points",
    }),
    ('balanced_accuracy', {
        -0.02: "balanced accuracy is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "balanced accuracy is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "balanced accuracy equals the baseline's; it may drop at most 1.0 points",
    }),
    ('worst_class_accuracy', {
        -0.02: "worst-class accuracy is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "worst-class accuracy is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "worst-class accuracy equals the baseline's; it may drop at most 1.0 points",
    }),
    ('class_accuracy.cat', {
        -0.02: "class cat's accuracy is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "class cat's accuracy is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "class cat's accuracy equals the baseline's; it may drop at most 1.0 points",
    }),
    ('selective_accuracy@0.8', {
        -0.02: "accuracy on the 80% most confident answers is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "accuracy on the 80% most confident answers is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "accuracy on the 80% most confident answers equals the baseline's; it may drop at most 1.0 points",
    }),
    ('nll', {
        -0.02: "NLL is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "NLL is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "NLL equals the baseline's; it may rise at most 0.01",
    }),
    ('brier', {
        -0.02: "the Brier score is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "the Brier score is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "the Brier score equals the baseline's; it may rise at most 0.01",
    }),
    ('ece', {
        -0.02: "ECE is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "ECE is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "ECE equals the baseline's; it may rise at most 1.0 points",
    }),
    ('overconfidence_error', {
        -0.02: "over-confidence is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "over-confidence is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "over-confidence equals the baseline's; it may rise at most 1.0 points",
    }),
    ('mce', {
        -0.02: "MCE is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "MCE is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "MCE equals the baseline's; it may rise at most 1.0 points",
    }),
    ('confident_wrong_rate@0.9', {
        -0.02: "the share wrong at ≥ 90% confidence is 2.0 points below the baseline's"
            ' (better); it may rise at most 1.0 points',
        0.03: "the share wrong at ≥ 90% confidence is 3.0 points above the baseline's (worse);"
            ' it may rise at most 1.0 points',
        0.0: "the share wrong at ≥ 90% confidence equals the baseline's; it may rise at most 1.0 points",
    }),
    ('confident_wrong_rate@0.99', {
        -0.02: "the share wrong at ≥ 99% confidence is 2.0 points below the baseline's"
            ' (better); it may rise at most 1.0 points',
        0.03: "the share wrong at ≥ 99% confidence is 3.0 points above the baseline's (worse);"
            ' it may rise at most 1.0 points',
        0.0: "the share wrong at ≥ 99% confidence equals the baseline's; it may rise at most 1.0 points",
    }),
    ('mean_confidence_wrong', {
        -0.02: "the confidence of wrong answers is 2.0 points below the baseline's (better); it"
            ' may rise at most 1.0 points',
        0.03: "the confidence of wrong answers is 3.0 points above the baseline's (worse); it"
            ' may rise at most 1.0 points',
        0.0: "the confidence of wrong answers equals the baseline's; it may rise at most 1.0 points",
    }),
    ('aurc', {
        -0.02: "AURC is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "AURC is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "AURC equals the baseline's; it may rise at most 0.01",
    }),
    ('alignment.energy', {
        -0.02: "the map's mass on the object is 2.0 points below the baseline's (worse); it may"
            ' drop at most 1.0 points',
        0.03: "the map's mass on the object is 3.0 points above the baseline's (better); it"
            ' may drop at most 1.0 points',
        0.0: "the map's mass on the object equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.lift', {
        -0.02: "alignment lift is 0.02 below the baseline's (worse); it may drop at most 0.01",
        0.03: "alignment lift is 0.03 above the baseline's (better); it may drop at most 0.01",
        0.0: "alignment lift equals the baseline's; it may drop at most 0.01",
    }),
    ('alignment.pointing_game', {
        -0.02: "the pointing game is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "the pointing game is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "the pointing game equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.rank_accuracy', {
        -0.02: "rank accuracy is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "rank accuracy is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "rank accuracy equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.off_object_rate', {
        -0.02: "the off-object rate is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the off-object rate is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the off-object rate equals the baseline's; it may rise at most 1.0 points",
    }),
    ('alignment.coverage', {
        -0.02: "alignment coverage is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "alignment coverage is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "alignment coverage equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.excluded', {
        -0.02: "the count of samples left out of alignment is 0.02 below the baseline's"
            ' (better); it may rise at most 0.01',
        0.03: "the count of samples left out of alignment is 0.03 above the baseline's"
            ' (worse); it may rise at most 0.01',
        0.0: "the count of samples left out of alignment equals the baseline's; it may rise at most 0.01",
    }),
    ('alignment.zero_maps', {
        -0.02: "the count of all-zero maps is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "the count of all-zero maps is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "the count of all-zero maps equals the baseline's; it may rise at most 0.01",
    }),
    ('alignment.lift.correct', {
        -0.02: "lift on right answers is 0.02 below the baseline's (worse); it may drop at most 0.01",
        0.03: "lift on right answers is 0.03 above the baseline's (better); it may drop at most 0.01",
        0.0: "lift on right answers equals the baseline's; it may drop at most 0.01",
    }),
    ('alignment.lift.wrong', {
        -0.02: "lift on wrong answers is 0.02 below the baseline's (worse); it may drop at most 0.01",
        0.03: "lift on wrong answers is 0.03 above the baseline's (better); it may drop at most 0.01",
        0.0: "lift on wrong answers equals the baseline's; it may drop at most 0.01",
    }),
    ('alignment.energy.correct', {
        -0.02: "the mass on the object for right answers is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "the mass on the object for right answers is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "the mass on the object for right answers equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.energy.wrong', {
        -0.02: "the mass on the object for wrong answers is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "the mass on the object for wrong answers is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "the mass on the object for wrong answers equals the baseline's; it may drop at most 1.0 points",
    }),
    ('alignment.lift.class.cat', {
        -0.02: "class cat's lift is 0.02 below the baseline's (worse); it may drop at most 0.01",
        0.03: "class cat's lift is 0.03 above the baseline's (better); it may drop at most 0.01",
        0.0: "class cat's lift equals the baseline's; it may drop at most 0.01",
    }),
    ('atlas.off_object_share', {
        -0.02: "the mean map's share where objects never are is 2.0 points below the baseline's"
            ' (better); it may rise at most 1.0 points',
        0.03: "the mean map's share where objects never are is 3.0 points above the baseline's"
            ' (worse); it may rise at most 1.0 points',
        0.0: "the mean map's share where objects never are equals the baseline's; it may rise at most 1.0 points",
    }),
    ('background.only_fg_accuracy', {
        -0.02: "accuracy without the scene is 2.0 points below the baseline's (worse); it may drop at most 1.0 points",
        0.03: "accuracy without the scene is 3.0 points above the baseline's (better); it may drop at most 1.0 points",
        0.0: "accuracy without the scene equals the baseline's; it may drop at most 1.0 points",
    }),
    ('background.only_bg_accuracy', {
        -0.02: "accuracy from the scene alone is 2.0 points below the baseline's (better); it"
            ' may rise at most 1.0 points',
        0.03: "accuracy from the scene alone is 3.0 points above the baseline's (worse); it"
            ' may rise at most 1.0 points',
        0.0: "accuracy from the scene alone equals the baseline's; it may rise at most 1.0 points",
    }),
    ('background.only_bg_chance_adjusted', {
        -0.02: "the scene's margin over chance is 2.0 points below the baseline's (better); it"
            ' may rise at most 1.0 points',
        0.03: "the scene's margin over chance is 3.0 points above the baseline's (worse); it"
            ' may rise at most 1.0 points',
        0.0: "the scene's margin over chance equals the baseline's; it may rise at most 1.0 points",
    }),
    ('background.mixed_same_accuracy', {
        -0.02: "accuracy on a same-class scene is 2.0 points below the baseline's (worse); it"
            ' may drop at most 1.0 points',
        0.03: "accuracy on a same-class scene is 3.0 points above the baseline's (better); it"
            ' may drop at most 1.0 points',
        0.0: "accuracy on a same-class scene equals the baseline's; it may drop at most 1.0 points",
    }),
    ('background.mixed_rand_accuracy', {
        -0.02: "accuracy on another class's scene is 2.0 points below the baseline's (worse);"
            ' it may drop at most 1.0 points',
        0.03: "accuracy on another class's scene is 3.0 points above the baseline's (better);"
            ' it may drop at most 1.0 points',
        0.0: "accuracy on another class's scene equals the baseline's; it may drop at most 1.0 points",
    }),
    ('background.bg_gap', {
        -0.02: "the background gap is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the background gap is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the background gap equals the baseline's; it may rise at most 1.0 points",
    }),
    ('background.flip_rate', {
        -0.02: "the flip rate is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the flip rate is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the flip rate equals the baseline's; it may rise at most 1.0 points",
    }),
    ('border.flip_rate', {
        -0.02: "the border flip rate is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the border flip rate is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the border flip rate equals the baseline's; it may rise at most 1.0 points",
    }),
    ('border.accuracy', {
        -0.02: "accuracy with another class's border is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "accuracy with another class's border is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "accuracy with another class's border equals the baseline's; it may drop at most 1.0 points",
    }),
    ('border.accuracy_drop', {
        -0.02: "the accuracy lost to another class's border is 2.0 points below the baseline's"
            ' (better); it may rise at most 1.0 points',
        0.03: "the accuracy lost to another class's border is 3.0 points above the baseline's"
            ' (worse); it may rise at most 1.0 points',
        0.0: "the accuracy lost to another class's border equals the baseline's; it may rise at most 1.0 points",
    }),
    ('corners.flip_rate', {
        -0.02: "the corners flip rate is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the corners flip rate is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the corners flip rate equals the baseline's; it may rise at most 1.0 points",
    }),
    ('corners.accuracy', {
        -0.02: "accuracy with another class's corners is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "accuracy with another class's corners is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "accuracy with another class's corners equals the baseline's; it may drop at most 1.0 points",
    }),
    ('corners.accuracy_drop', {
        -0.02: "the accuracy lost to another class's corners is 2.0 points below the baseline's"
            ' (better); it may rise at most 1.0 points',
        0.03: "the accuracy lost to another class's corners is 3.0 points above the baseline's"
            ' (worse); it may rise at most 1.0 points',
        0.0: "the accuracy lost to another class's corners equals the baseline's; it may rise at most 1.0 points",
    }),
    ('lighting.flip_rate', {
        -0.02: "the lighting flip rate is 2.0 points below the baseline's (better); it may rise at most 1.0 points",
        0.03: "the lighting flip rate is 3.0 points above the baseline's (worse); it may rise at most 1.0 points",
        0.0: "the lighting flip rate equals the baseline's; it may rise at most 1.0 points",
    }),
    ('lighting.accuracy', {
        -0.02: "accuracy with another class's lighting is 2.0 points below the baseline's"
            ' (worse); it may drop at most 1.0 points',
        0.03: "accuracy with another class's lighting is 3.0 points above the baseline's"
            ' (better); it may drop at most 1.0 points',
        0.0: "accuracy with another class's lighting equals the baseline's; it may drop at most 1.0 points",
    }),
    ('lighting.accuracy_drop', {
        -0.02: "the accuracy lost to another class's lighting is 2.0 points below the"
            " baseline's (better); it may rise at most 1.0 points",
        0.03: "the accuracy lost to another class's lighting is 3.0 points above the"
            " baseline's (worse); it may rise at most 1.0 points",
        0.0: "the accuracy lost to another class's lighting equals the baseline's; it may rise at most 1.0 points",
    }),
    ('sanity.randomization_similarity', {
        -0.02: "the sanity similarity is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "the sanity similarity is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "the sanity similarity equals the baseline's; it may rise at most 0.01",
    }),
    ('sanity.randomization_similarity.spread', {
        -0.02: "the sanity spread is 0.02 below the baseline's (better); it may rise at most 0.01",
        0.03: "the sanity spread is 0.03 above the baseline's (worse); it may rise at most 0.01",
        0.0: "the sanity spread equals the baseline's; it may rise at most 0.01",
    }),
]


def _rule(score: str, op: str, threshold: float, value: float | None, higher: bool, **extra: object) -> RuleResult:
    passed = extra.pop("passed", None)
    if passed is None:
        assert value is not None
        passed = value >= threshold if op == ">=" else value <= threshold
    return RuleResult("r", score, op, threshold, value, bool(passed), "", higher, **extra)  # type: ignore[arg-type]


def test_the_tables_cover_every_registered_score() -> None:
    names = [spec.expand("cat") for spec in all_specs()]
    assert [row[0] for row in PLAIN] == names
    assert [row[0] for row in BASELINE] == names


@pytest.mark.parametrize(("score", "op", "threshold", "said"), PLAIN, ids=[row[0] for row in PLAIN])
def test_a_plain_rule_says_its_value_truly_on_both_sides_of_the_threshold(
    score: str, op: str, threshold: float, said: dict[float, str],
) -> None:
    higher = op == ">="
    for value, sentence in said.items():
        assert rule_text(_rule(score, op, threshold, value, higher)) == sentence, value


@pytest.mark.parametrize(("score", "said"), BASELINE, ids=[row[0] for row in BASELINE])
def test_a_baseline_rule_says_the_change_not_the_score(score: str, said: dict[float, str]) -> None:
    higher = next(spec.higher_is_better for spec in all_specs() if spec.expand("cat") == score)
    for change, sentence in said.items():
        rule = RuleResult("r", score, "non_inferior", 0.01, change, False, "", higher)
        assert rule_text(rule) == sentence, change


@pytest.mark.parametrize(
    ("rule", "text", "state"),
    [
        # A plain rule: the value against the threshold, in the score's own unit.
        (_rule("accuracy", ">=", 0.9, 0.85, True), "85% < 90%: failed", "failed"),
        (_rule("alignment.lift", ">=", 2.0, 2.304, True), "2.30× ≥ 2.00×: passed", "passed"),
        (_rule("nll", "<=", 0.5, 0.61234, False), "0.6123 > 0.5: failed", "failed"),
        (_rule("alignment.zero_maps", "<=", 5, 8, False), "8 > 5: failed", "failed"),
        # With a confidence: the bound decides; the interval holding the threshold is "undecided".
        (_rule("accuracy", ">=", 0.9, 0.913, True, passed=False, interval=(0.893, 0.93), confidence=0.95),
         "91.3% ≥ 90%, but the 95% lower bound is 89.3%: undecided; more samples would settle it", "undecided"),
        (_rule("accuracy", ">=", 0.9, 0.95, True, interval=(0.92, 0.97), confidence=0.95),
         "95% ≥ 90%, and the 95% lower bound 92% ≥ 90%: passed", "passed"),
        (_rule("accuracy", ">=", 0.9, 0.8, True, interval=(0.75, 0.85), confidence=0.95),
         "80% < 90%, and even the 95% upper bound 85% < 90%: failed", "failed"),
        (_rule("accuracy", ">=", 0.9, 0.88, True, interval=(0.85, 0.91), confidence=0.95),
         "88% < 90%, but the 95% upper bound is 91%: undecided; more samples would settle it", "undecided"),
        (_rule("ece", "<=", 0.15, 0.12, False, passed=False, interval=(0.1, 0.16), confidence=0.9),
         "12% ≤ 15%, but the 90% upper bound is 16%: undecided; more samples would settle it", "undecided"),
        (_rule("ece", "<=", 0.15, 0.2, False, interval=(0.17, 0.23), confidence=0.95),
         "20% > 15%, and even the 95% lower bound 17% > 15%: failed", "failed"),
        (_rule("confident_wrong_rate@0.99", "<=", 0.01, 0.0, False, passed=False, interval=(0.0, 0.0722),
               confidence=0.95, note="review set too small: cannot pass at 95% with 40 samples (needs at least 268)"),
         "0% ≤ 1%, but the 95% upper bound is 7.2%: undecided; review set too small: cannot pass at 95% with 40 "
         "samples (needs at least 268)", "undecided"),
        (_rule("alignment.lift", ">=", 2.0, 2.5, True, interval=(2.304, 2.7), confidence=0.95),
         "2.50× ≥ 2.00×, and the 95% lower bound 2.30× ≥ 2.00×: passed", "passed"),
        (_rule("accuracy", ">=", 0.9, 0.95, True, passed=False, interval=(math.nan, math.nan), confidence=0.95),
         "95% ≥ 90%, with no 95% interval (too few samples): undecided", "undecided"),
        (_rule("accuracy", ">=", 0.9, None, True, passed=False), "could not be computed: failed", "failed"),
        # Against the baseline: the change in points against the signed limit.
        (RuleResult("r", "accuracy", "non_inferior", 0.01, -0.005, False, "", True, (-0.014, 0.004), confidence=0.95),
         "change -0.5 pts ≥ -1.0 pts, but the 95% lower bound is -1.4 pts: undecided; more samples would settle it",
         "undecided"),
        (RuleResult("r", "overconfidence_error", "non_inferior", 0.01, 0.002, True, "", False, (-0.001, 0.006),
                    confidence=0.95),
         "change +0.2 pts ≤ +1.0 pts, and the 95% upper bound +0.6 pts ≤ +1.0 pts: passed", "passed"),
        (RuleResult("r", "accuracy", "superior", 0.0, 0.03, True, "", True, (0.012, 0.05), confidence=0.9),
         "change +3.0 pts > +0.0 pts, and the 90% lower bound +1.2 pts > +0.0 pts: passed", "passed"),
        (RuleResult("r", "ece", "superior", 0.01, 0.02, False, "", False, (0.005, 0.04), confidence=0.95),
         "change +2.0 pts ≥ -1.0 pts, and even the 95% lower bound +0.5 pts ≥ -1.0 pts: failed", "failed"),
    ],
    ids=["below", "lift", "value", "count", "undecided-above", "bound-passes", "shown-fail", "undecided-below",
         "ceiling-undecided", "ceiling-fail", "too-small", "lift-bound", "no-interval", "missing", "drop-undecided",
         "rise-passes", "gain-passes", "ece-gain-fails"],
)
def test_the_deciding_number_is_said_in_the_scores_unit(rule: RuleResult, text: str, state: str) -> None:
    found = decision(rule)
    assert (found.text, found.state) == (text, state)
    # A line never mixes a percentage with a bare fraction of the same score.
    assert not ("%" in text and f"{rule.threshold:g}" in text.replace("%", "").split()), text


def test_the_rule_sentence_is_the_words_then_the_deciding_number() -> None:
    rule = _rule("background.bg_gap", "<=", 0.1, 0.0, False, interval=(-0.02, 0.03), confidence=0.95)
    assert rule_sentence(rule) == ("A matching scene adds nothing to accuracy — 0% ≤ 10%, and the 95% upper bound 3% "
                                   "≤ 10%: passed")
    failing = _rule("background.bg_gap", "<=", 0.1, 0.4, False, interval=(0.3, 0.5), confidence=0.95)
    assert rule_sentence(failing) == ("A matching scene adds 40% to accuracy: the scene, not only the object, carries "
                                      "the answer — 40% > 10%, and even the 95% lower bound 30% > 10%: failed")
    # The ending follows the value, not the verdict: an undecided bg_gap whose value passes claims no shortcut.
    undecided = _rule("background.bg_gap", "<=", 0.1, 0.08, False, passed=False, interval=(0.02, 0.14),
                      confidence=0.95)
    assert rule_text(undecided) == "a matching scene adds 8% to accuracy"


def test_a_warning_says_both_sides_of_an_ungated_change() -> None:
    warning = ChangeWarning("ece", 0.1, 0.062, 0.138, 0.95, 0.11, 0.01)
    assert warning_sentence(warning) == ("ECE is 10.0 points above the baseline's (worse): change +10.0 pts, 95% "
                                         "interval [+6.2 pts, +13.8 pts]; no rule gates it")
    lift = ChangeWarning("alignment.lift", -0.62, -0.8, -0.4, 0.95, 1.9, 2.52)
    assert warning_sentence(lift) == ("alignment lift is 0.62 below the baseline's (worse): change -0.62, 95% "
                                      "interval [-0.80, -0.40]; no rule gates it")


@pytest.mark.parametrize(("value", "text"), [(0.913, "91.3%"), (0.9, "90%"), (0.0075, "0.75%"), (0.0, "0%"),
                                             (1.0, "100%"), (-0.25, "-25%"), (0.00001, "0.00%")])
def test_percent(value: float, text: str) -> None:
    assert percent(value) == text
